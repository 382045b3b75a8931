"""Every page and action of the web UI in process (``TestClient`` over https://testserver):
who may open or send each (as on the admin API), CSRF on every form, sign-in and its
lock-out, the sign-in page's language, and bad input answered with a page, never a 500.

The browser tests (``test_browser.py``) drive the same pages in Chromium; this table covers
every route, and a test checks that no route of ``/ui`` is missing from it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from argon2 import PasswordHasher
from starlette.routing import Match

from clientregistry.api.app import create_app
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import Submitter
from clientregistry.security import passwords, users
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import Role

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PASSWORD = "a password for the tests"
ACCOUNTS = {"reviewer": "rita", "auditor": "otto", "admin": "ada"}
ANYONE, REVIEW, AUDIT, ADMIN = (
    {"reviewer", "auditor", "admin"},
    {"reviewer", "admin"},
    {"auditor", "admin"},
    {"admin"},
)


class UiRoute(NamedTuple):
    method: str
    path: str
    form: dict[str, str] | None
    allowed: set[str]
    status: int
    """What an allowed caller gets (303: a redirect after a form)."""


ROUTES = [
    UiRoute("GET", "/ui/", None, ANYONE, 200),
    UiRoute("GET", "/ui/account", None, ANYONE, 200),
    UiRoute("POST", "/ui/account/language", {"language": "en"}, ANYONE, 303),
    UiRoute(
        "POST",
        "/ui/account/password",
        {"current_password": "wrong", "new_password": "x" * 12, "confirm_password": "x" * 12},
        ANYONE,
        400,
    ),
    UiRoute("GET", "/ui/people", None, REVIEW, 200),
    UiRoute("GET", "/ui/people/no-such-person", None, REVIEW, 404),
    UiRoute("POST", "/ui/people/no-such-person/join", {"record_id": "x"}, REVIEW, 404),
    UiRoute("GET", "/ui/records/no-such-record", None, REVIEW, 404),
    UiRoute("GET", "/ui/records/no-such-record/fhir", None, REVIEW, 404),
    UiRoute("GET", "/ui/records/no-such-record/versions/1", None, REVIEW, 404),
    UiRoute("POST", "/ui/records/no-such-record/break", {}, REVIEW, 404),
    UiRoute("POST", "/ui/records/no-such-record/unbreak", {}, REVIEW, 404),
    UiRoute("GET", "/ui/review", None, REVIEW, 200),
    UiRoute("GET", "/ui/review/potential", None, REVIEW, 200),
    UiRoute("GET", "/ui/review/potential/next", None, REVIEW, 303),
    UiRoute("GET", "/ui/review/items/999", None, REVIEW, 404),
    UiRoute("POST", "/ui/review/items/999/decide", {"decision": "same"}, REVIEW, 404),
    UiRoute("GET", "/ui/review/auto/no-such-record", None, REVIEW, 404),
    UiRoute("POST", "/ui/review/auto/no-such-record/confirm", {}, REVIEW, 404),
    UiRoute("GET", "/ui/rules", None, ANYONE, 200),
    UiRoute("GET", "/ui/rules/edit", None, ADMIN, 200),
    UiRoute("POST", "/ui/rules/check", {"content": "{}"}, ADMIN, 400),
    UiRoute("GET", "/ui/rules/versions", None, ADMIN, 200),
    UiRoute("GET", "/ui/rules/versions/999", None, ADMIN, 404),
    UiRoute("POST", "/ui/rules/versions/999/dry-run", {}, ADMIN, 404),
    UiRoute("POST", "/ui/rules/versions/999/activate", {}, ADMIN, 404),
    UiRoute("POST", "/ui/rules/restore", {}, ADMIN, 409),
    UiRoute("GET", "/ui/rules/rematches/999", None, ADMIN, 404),
    UiRoute("GET", "/ui/rules/rematches/999/progress", None, ADMIN, 404),
    UiRoute("GET", "/ui/rules/rematches/999/report.csv", None, ADMIN, 404),
    UiRoute("POST", "/ui/rules/rematches/999/cancel", {}, ADMIN, 404),
    UiRoute("GET", "/ui/rules/test", None, REVIEW, 200),
    UiRoute("POST", "/ui/rules/test", {"left_record": "a", "right_record": "b"}, REVIEW, 404),
    UiRoute("GET", "/ui/users", None, ADMIN, 200),
    UiRoute(
        "POST", "/ui/users", {"username": "carol", "password": "x", "role": "auditor"}, ADMIN, 400
    ),
    UiRoute("POST", "/ui/users/nobody", {"action": "disable"}, ADMIN, 404),
    UiRoute("GET", "/ui/imports", None, ADMIN, 200),
    UiRoute("POST", "/ui/imports", {"system": "openmrs"}, ADMIN, 400),
    UiRoute("GET", "/ui/imports/999", None, ADMIN, 404),
    UiRoute("GET", "/ui/imports/999/progress", None, ADMIN, 404),
    UiRoute("GET", "/ui/imports/999/report.csv", None, ADMIN, 404),
    UiRoute("GET", "/ui/imports/999/report.xlsx", None, ADMIN, 404),
    UiRoute("POST", "/ui/imports/999/cancel", {}, ADMIN, 404),
    UiRoute("GET", "/ui/audit", None, AUDIT, 200),
    UiRoute("GET", "/ui/audit/999999", None, AUDIT, 404),
    UiRoute("POST", "/ui/audit/999999/revert", {}, REVIEW, 404),
]
"""Every page and form of /ui but the sign-in ones, who may use it, and what they get."""
OPEN = ["/ui/login", "/ui/logout", "/ui/language", "/", "/ui", "/ui/{rest:path}"]
"""Routes anyone reaches (signing in and out, the language switch, redirects, not found)."""


@dataclass
class Ui:
    context: RegistryContext
    app: Any

    def client(self, language: str = "en") -> TestClient:
        return TestClient(
            self.app,
            base_url="https://testserver",
            headers={"accept-language": language},
            follow_redirects=False,
        )

    def signed_in(self, username: str, language: str = "en") -> tuple[TestClient, str]:
        """A client signed in as ``username``, and its CSRF token."""
        client = self.client(language)
        response = sign_in(client, username)
        assert response.status_code == 303, response.text
        account = client.get("/ui/account")
        token = re.search(r'name="csrf_token" value="([^"]+)"', account.text)
        assert token is not None
        return client, token.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    page = client.get("/ui/login")
    found = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert found is not None
    form = {"username": username, "password": password, "login_token": found.group(1)}
    return client.post("/ui/login", data=form)


def _ui(data_dir: Path) -> Ui:
    init_data_dir(data_dir, hostnames=[])
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    with transaction(context.sessions) as session:
        for role, username in ACCOUNTS.items():
            users.add_user(session, username, PASSWORD, Role(role))
        users.add_user(session, "lucy", PASSWORD, Role.REVIEWER)
    return Ui(context, create_app(context))


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
        made = _ui(tmp_path_factory.mktemp("ui") / "data")
        yield made
        made.context.close()


@pytest.fixture
def own_ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ui]:
    """A registry of its own (a lock-out there keeps nobody else out)."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    made = _ui(tmp_path / "data")
    yield made
    made.context.close()


def _routes(routes: Any) -> list[Any]:
    out: list[Any] = []
    for route in routes:
        nested = getattr(route, "original_router", None)
        out += _routes(nested.routes) if nested is not None else [route]
    return out


def test_the_table_covers_every_ui_route(ui: Ui) -> None:
    found = [r for r in _routes(ui.app.routes) if getattr(r, "path", "").startswith(("/ui", "/"))]
    found = [r for r in found if r.path.startswith("/ui") or r.path == "/"]
    assert len(found) > 25
    for route in found:
        if route.path in OPEN or route.path.startswith("/ui/static"):
            continue
        for method in getattr(route, "methods", None) or ():
            scope = {"type": "http", "method": method}
            covered = any(
                route.matches({**scope, "path": r.path})[0] is Match.FULL
                for r in ROUTES
                if r.method == method
            )
            assert covered, f"{method} {route.path} is missing from ROUTES"


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
@pytest.mark.parametrize("caller", ["nobody", "reviewer", "auditor", "admin"])
def test_every_page_and_action_checks_the_role(ui: Ui, caller: str, route: UiRoute) -> None:
    if caller == "nobody":
        client, token = ui.client(), ""
    else:
        client, token = ui.signed_in(ACCOUNTS[caller])
    form = None if route.form is None else {**route.form, "csrf_token": token}
    response = client.request(route.method, route.path, data=form)
    if caller == "nobody":
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/login")
    elif caller in route.allowed:
        assert response.status_code == route.status, response.text[:800]
    else:
        assert response.status_code == 403, response.text[:800]
        assert "Not allowed" in response.text
    assert "Traceback" not in response.text
    if response.status_code != 303:
        assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("route", [r for r in ROUTES if r.method == "POST"], ids=lambda r: r.path)
def test_every_form_needs_the_csrf_token(ui: Ui, route: UiRoute) -> None:
    client, token = ui.signed_in("ada")
    for sent in (None, "", token[:-2] + "xx"):
        form = dict(route.form or {})
        if sent is not None:
            form["csrf_token"] = sent
        response = client.post(route.path, data=form)
        assert response.status_code == 403, (sent, response.text[:500])
        assert "This form has expired" in response.text


def test_a_form_from_another_site_is_refused(ui: Ui) -> None:
    client, token = ui.signed_in("ada")
    response = client.post(
        "/ui/account/language",
        data={"language": "fr", "csrf_token": token},
        headers={"origin": "https://evil.example"},
    )
    assert response.status_code == 403


def test_sign_in_refusals_and_the_lock_out(own_ui: Ui) -> None:
    client = own_ui.client()
    wrong = sign_in(client, "lucy", "not the password")
    assert wrong.status_code == 401 and "Wrong username or password." in wrong.text
    forged = client.post(
        "/ui/login", data={"username": "lucy", "password": PASSWORD, "login_token": "forged"}
    )
    assert forged.status_code == 403
    for _ in range(6):
        locked = sign_in(client, "lucy", "not the password")
    assert locked.status_code == 401
    assert "Too many failed sign-ins: try again in" in locked.text
    # Even the right password is refused while the lock holds (the same use case as the API).
    assert "Too many failed sign-ins" in sign_in(client, "lucy").text


def test_the_sign_in_page_speaks_the_browsers_language(ui: Ui) -> None:
    french = ui.client("fr-CA,fr;q=0.9,en;q=0.5").get("/ui/login")
    assert '<html lang="fr">' in french.text and "Se connecter" in french.text
    english = ui.client("de-DE,en;q=0.5").get("/ui/login")
    assert '<html lang="en">' in english.text and "Sign in" in english.text
    switched = ui.client("en").get("/ui/language?lang=fr&next=/ui/login")
    assert switched.status_code == 303 and "cr_lang=fr" in switched.headers["set-cookie"]


def test_after_sign_in_the_browser_goes_where_it_was_going(ui: Ui) -> None:
    client = ui.client()
    start = client.get("/ui/review/potential")
    assert start.headers["location"] == "/ui/login?next=%2Fui%2Freview%2Fpotential"
    page = client.get(start.headers["location"])
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None and 'value="/ui/review/potential"' in page.text
    form = {
        "username": "rita",
        "password": PASSWORD,
        "login_token": token.group(1),
        "next": "https://evil.example/",
    }
    assert client.post("/ui/login", data=form).headers["location"] == "/ui/"


@pytest.mark.parametrize(
    "path",
    [
        "/ui/people?birth_date=5%20May&gender=x",
        "/ui/people?name=" + "a" * 300,
        "/ui/people?offset=-5&name=x",
        "/ui/people?system=%00",
        "/ui/audit?since=notaday&offset=abc&outcome=99",
        "/ui/review/potential?offset=1e9",
        "/ui/review/nosuchqueue",
        "/ui/?days=abc",
        "/ui/records/%00/fhir",
        "/ui/review/items/abc",
        "/ui/review/items/99999999999999999999999",
        "/ui/review/items/%D9%A1",
        "/ui/audit/-1",
        "/ui/records/x/versions/abc",
        "/ui/people?name=" + "b" * 5000,
        "/ui/people/x?event=zz&done=" + "d" * 500,
        "/ui/?days=" + "9" * 100,
        "/ui/login?next=" + "n" * 5000,
    ],
)
def test_bad_input_gets_a_page_not_an_error(ui: Ui, path: str) -> None:
    client, _ = ui.signed_in("ada")
    response = client.get(path)
    assert response.status_code in (200, 303, 400, 404), response.text[:500]
    assert "Traceback" not in response.text
    if response.status_code != 303:
        assert response.headers["content-type"].startswith("text/html"), response.text[:300]


def test_the_pages_of_a_real_person(ui: Ui) -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://clientregistry.org/openmrs", "value": "pp1"}],
        "name": [{"family": "Kato", "given": ["Moses"]}],
        "gender": "male",
        "birthDate": "1977-07-07",
    }
    with transaction(ui.context.sessions) as session:
        result = Submitter(ui.context).submit(
            session, patient, ui.context.settings.systems["openmrs"]
        )
    client, _ = ui.signed_in("rita")
    person = client.get(f"/ui/people/{result.golden_id}")
    assert person.status_code == 200 and "Moses" in person.text
    record = client.get(f"/ui/records/{result.record_id}")
    assert record.headers["location"] == f"/ui/people/{result.golden_id}#record-{result.record_id}"
    fhir = client.get(f"/ui/records/{result.record_id}/fhir")
    assert fhir.status_code == 200 and "&#34;family&#34;: &#34;Kato&#34;" in fhir.text
    version = client.get(f"/ui/records/{result.record_id}/versions/1")
    assert version.status_code == 200
    found = client.get("/ui/people", params={"name": "moses kato"})
    assert f"/ui/people/{result.golden_id}" in found.text


def test_every_audit_entry_has_its_page(ui: Ui) -> None:
    """An entry whose detail holds no reason or before/after (a search's, a sign-in's) has
    its page as much as a link action's (its template once failed on the missing keys)."""
    client, _ = ui.signed_in("otto")
    client.get("/ui/audit", params={"agent": "nobody"})  # an audit-read entry: detail, no reason
    listed = client.get("/ui/audit")
    ids = re.findall(r'href="/ui/audit/(\d+)"', listed.text)
    assert len(ids) >= 2
    for event_id in ids:
        entry = client.get(f"/ui/audit/{event_id}")
        assert entry.status_code == 200, entry.text[:500]
        assert f"Audit entry {event_id}" in entry.text


def test_forms_are_bounded_and_of_one_kind(ui: Ui) -> None:
    client = ui.client()
    huge = client.post(
        "/ui/login",
        content=b"username=" + b"a" * 100_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413
    signed, token = ui.signed_in("ada")
    too_many = "&".join(f"f{i}=1" for i in range(500)) + f"&csrf_token={token}"
    response = signed.post(
        "/ui/account/language",
        content=too_many.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    json = signed.post("/ui/account/language", json={"csrf_token": token, "language": "en"})
    assert json.status_code == 415
    bad = signed.post(
        "/ui/account/language",
        content=b"language=%ff%fe&csrf_token=" + token.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert bad.status_code in (400, 403)


def test_an_upload_with_a_column_mapping_and_its_report(ui: Ui) -> None:
    """The upload page starts the import use case the command line and the admin API start
    (run here in the test's process: no job runner), and its report comes back on the page
    and as CSV and XLSX."""
    import csv
    import io
    import zipfile

    from clientregistry.registry import imports

    client, token = ui.signed_in("ada")
    form = client.get("/ui/imports")
    assert form.status_code == 200 and 'enctype="multipart/form-data"' in form.text
    rows = "pid,first,last,sex,dob\nu1,Moses,Kato,m,1977-07-07\nu2,Moses,Kato,m,1977-07-07\n"
    rows += "u3,,,x,not a date\n"
    fields = {
        "csrf_token": token,
        "system": "openmrs",
        "col_id": "pid",
        "col_given": "first",
        "col_family": "last",
        "col_gender": "sex",
        "col_birth_date": "dob",
    }
    files = {"file": ("clinic.csv", rows.encode(), "text/csv")}
    sent = client.post("/ui/imports", data=fields, files=files)
    assert sent.status_code == 303, sent.text[:800]
    job_id = int(sent.headers["location"].split("?")[0].rsplit("/", 1)[1])
    waiting = client.get(sent.headers["location"])
    assert "<progress" in waiting.text and 'http-equiv="refresh"' in waiting.text
    assert client.get(f"/ui/imports/{job_id}/progress").json()["finished"] is False
    imports.run_import(ui.context, job_id, background=False)
    done = client.get(f"/ui/imports/{job_id}")
    assert "<progress" not in done.text and "refresh" not in done.text
    assert client.get(f"/ui/imports/{job_id}/progress").json()["finished"] is True
    assert "Moses" not in done.text  # the report shows ids, not demographics
    report = client.get(f"/ui/imports/{job_id}/report.csv")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(report.text)))
    assert len(lines) == 3 and [line["patient_id"] for line in lines[:2]] == ["u1", "u2"]
    stored = [line for line in lines if line["record_id"]]
    assert len(stored) == 2 and all(line["CRUID"] for line in stored)
    assert stored[0]["CRUID"] == stored[1]["CRUID"]  # the same person twice: linked
    assert {line["outcome"] for line in stored} <= {"new-person", "linked"}
    assert lines[2]["outcome"] in ("error", "skipped") and lines[2]["error"]
    assert stored[0]["record_id"] in done.text and stored[0]["CRUID"] in done.text
    xlsx = client.get(f"/ui/imports/{job_id}/report.xlsx")
    assert xlsx.status_code == 200 and xlsx.content[:4] == b"PK\x03\x04"
    with zipfile.ZipFile(io.BytesIO(xlsx.content)) as book:
        workbook = book.read("xl/workbook.xml").decode()
    assert all(f'name="{sheet}"' in workbook for sheet in ("Summary", "Rows", "Errors"))
    again = client.post("/ui/imports", data=fields, files=files)
    assert again.status_code == 303 and "done=already" in again.headers["location"]


def test_an_upload_refused_keeps_the_form(ui: Ui) -> None:
    client, token = ui.signed_in("ada")
    files = {"file": ("clinic.csv", b"a,b\n1,2\n", "text/csv")}
    fields = {"csrf_token": token, "system": "no-such-system", "col_given": "first"}
    refused = client.post("/ui/imports", data=fields, files=files)
    assert refused.status_code == 400 and "no-such-system" in refused.text
    assert 'value="first"' in refused.text  # what was typed stays
    bad_mapping = {"csrf_token": token, "id_column_1": "nin"}
    refused = client.post("/ui/imports", data=bad_mapping, files=files)
    assert refused.status_code == 400 and "Traceback" not in refused.text
    empty = client.post(
        "/ui/imports", data={"csrf_token": token}, files={"file": ("x.csv", b"", "text/csv")}
    )
    assert empty.status_code == 400 and "The file is empty." in empty.text
    broken = client.post(
        "/ui/imports",
        content=b"--xx\r\nnonsense",
        headers={"content-type": "multipart/form-data; boundary=xx"},
    )
    assert broken.status_code in (400, 403) and "Traceback" not in broken.text

    def chunks():  # no Content-Length: a chunked body, of any size
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        yield b"a,b\n" * 1000

    undeclared = client.post(
        "/ui/imports",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xx"},
    )
    assert undeclared.status_code == 411 and "Traceback" not in undeclared.text


def test_rules_checked_tried_put_in_force_and_restored(own_ui: Ui) -> None:
    """The rules pages call the use cases of ``/admin/rules`` (the re-matches run here, in
    the test's process: no job runner)."""
    import json

    from clientregistry.registry import rematch, rules_view
    from clientregistry.registry.actor import Actor

    context = own_ui.context
    client, token = own_ui.signed_in("ada")
    edit = client.get("/ui/rules/edit")
    assert edit.status_code == 200 and "potentialMatchThreshold" in edit.text
    bad = {"csrf_token": token, "content": '{"rules": [{"name": "x", "fields": 3}]}'}
    refused = client.post("/ui/rules/check", data=bad)
    assert refused.status_code == 400
    assert "the decision rules are not valid" in refused.text and "rules[0]" in refused.text
    document = rules_view.rules_view(context, Actor("ada", Role.ADMIN)).document
    document["rules"][0]["autoMatchThreshold"] += 0.5
    files = {"file": ("stricter.json", json.dumps(document).encode(), "application/json")}
    sent = client.post(
        "/ui/rules/check", data={"csrf_token": token, "note": "stricter"}, files=files
    )
    assert sent.status_code == 303, sent.text[:800]
    dry = int(sent.headers["location"].split("?")[0].rsplit("/", 1)[1])
    assert "<progress" in client.get(sent.headers["location"]).text
    assert rematch.run_rematch(context, dry, reload_wait=0).state.value == "done"
    tried = client.get(f"/ui/rules/rematches/{dry}")
    assert "What would change" in tried.text and "Persons merged" in tried.text
    version = rematch.rematch_status(context, dry).version
    shown = client.get(f"/ui/rules/versions/{version}")
    assert shown.status_code == 200 and "autoMatchThreshold" in shown.text
    activate = client.post(f"/ui/rules/versions/{version}/activate", data={"csrf_token": token})
    assert activate.status_code == 303
    job = int(activate.headers["location"].split("?")[0].rsplit("/", 1)[1])
    assert rematch.run_rematch(context, job, reload_wait=0).state.value == "done"
    assert context.in_force is not None and context.in_force.active.version == version
    versions = client.get("/ui/rules/versions")
    assert "stricter.json" in versions.text and "Restore the previous rules" in versions.text
    restore = client.post("/ui/rules/restore", data={"csrf_token": token})
    assert restore.status_code == 303
    back = int(restore.headers["location"].split("?")[0].rsplit("/", 1)[1])
    assert rematch.run_rematch(context, back, reload_wait=0).state.value == "done"
    assert context.in_force is not None and context.in_force.active.version != version
    report = client.get(f"/ui/rules/rematches/{dry}/report.csv")
    assert report.status_code == 200 and report.text.startswith("record_id,")
    # A reviewer reads the rules but changes nothing, whatever the form carries.
    reviewer, reviewer_token = own_ui.signed_in("rita")
    assert "Change the rules" not in reviewer.get("/ui/rules").text
    for path in ("/ui/rules/check", f"/ui/rules/versions/{version}/activate", "/ui/rules/restore"):
        denied = reviewer.post(path, data={"csrf_token": reviewer_token, "content": "{}"})
        assert denied.status_code == 403, path
