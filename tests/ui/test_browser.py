"""The web UI in a real browser (Debian's Chromium through Playwright) against the real
``clientregistry serve`` over HTTPS: signing in, finding a person, reviewing a potential
match with the keyboard and seeing the link through the FHIR API, breaking a record out and
reverting it, resolving a conflict, roles (a reviewer kept from the users page and the rules
editor, an auditor from acting), a Patient named ``<script>`` shown as text, a stale CSRF
token refused, two reviewers deciding one item, the back button and reload, accessibility
(axe-core) of every main page, and the screenshots of the README.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_kit import PASSWORD, add_account, check_accessibility, screenshot, sign_in
from playwright.sync_api import expect

SYSTEMS = {
    "openmrs": "http://clientregistry.org/openmrs",
    "dhis2": "http://clientregistry.org/dhis2",
    "lims": "http://clientregistry.org/lims",
}
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def patient(
    system: str,
    value: str,
    given: str,
    family: str,
    *,
    birth_date: str = "1984-01-12",
    phone: str | None = "0772410233",
    gender: str = "female",
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEMS[system], "value": value}],
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth_date,
    }
    if phone:
        resource["telecom"] = [{"system": "phone", "value": phone}]
    return resource


def submit(server: Any, system: str, resource: dict[str, Any]) -> tuple[str, str]:
    """Submit as ``system``; (record id, CRUID)."""
    response = server.submit(system, resource)
    assert response.status_code in (200, 201), response.text
    record = response.headers["location"].split("/")[-1]
    golden = response.headers["locationcruid"].split("/")[-1]
    return record, golden


def golden_of(server: Any, record_id: str) -> str:
    """The record's golden record, read through the FHIR API (``link`` of type ``refer``) by
    a system allowed to read demographics."""
    response = server.read("hie", record_id)
    assert response.status_code == 200, response.text
    for link in response.json().get("link", []):
        if link.get("type") == "refer":
            return str(link["other"]["reference"].split("/")[-1])
    raise AssertionError(response.text)


# ----------------------------------------------------------------------------- signing in


def test_sign_in_and_out(ui_server: Any, new_context: Callable[..., Any]) -> None:
    page = new_context().new_page()
    page.goto(f"{ui_server.base_url}/")
    assert page.url.endswith("/ui/login?next=%2Fui%2F")
    sign_in(page, ui_server.base_url, "rita", "not the password")
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    sign_in(page, ui_server.base_url, "rita")
    expect(page).to_have_url(f"{ui_server.base_url}/ui/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "cr_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile("/ui/login"))
    page.goto(f"{ui_server.base_url}/ui/people")
    assert "/ui/login" in page.url  # the session is over


# ----------------------------------------------------------------------------- people


def test_find_a_person_by_a_misspelled_name(ui_server: Any, signed_in: Callable[..., Any]) -> None:
    record, golden = submit(ui_server, "openmrs", patient("openmrs", "f1", "Namukasa", "Birungi"))
    submit(ui_server, "dhis2", patient("dhis2", "f2", "Namukassa", "Birungi"))
    page = signed_in("rita")
    page.goto(f"{ui_server.base_url}/ui/people")
    page.get_by_label("Name (spelling may differ)").fill("birunji namukasa")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Namukasa Birungi").click()
    expect(page).to_have_url(re.compile(f"/ui/people/{golden}$"))
    expect(page.get_by_role("heading", name=re.compile("Records side by side"))).to_be_visible()
    # The two records differ in the given name, and the row says so.
    row = page.locator("tr.differs", has_text="Given names")
    assert "Namukassa" in row.inner_text() and "differs" in row.inner_text()
    page.go_back()
    expect(page).to_have_url(re.compile("name=birunji"))
    page.reload()
    expect(page.get_by_role("link", name="Namukasa Birungi")).to_be_visible()
    del record


def test_a_script_in_a_name_is_shown_as_text(ui_server: Any, signed_in: Callable[..., Any]) -> None:
    name = "<script>alert('x')</script>"
    family = 'O\'Hara "Junior" <b>bold</b>'
    alone = patient("lims", "x1", name, family, birth_date="1931-03-03", phone=None)
    record, golden = submit(ui_server, "lims", alone)
    page = signed_in("rita")
    page.goto(f"{ui_server.base_url}/ui/people/{golden}")
    assert name in page.locator("table.side-by-side").inner_text()
    assert family in page.locator("table.side-by-side").inner_text()
    assert page.locator("table.side-by-side b").count() == 0  # no markup made it through
    page.goto(f"{ui_server.base_url}/ui/people?cruid={record}")
    expect(page.get_by_role("link", name=f"{name} {family}")).to_be_visible()
    # (new_context fails the test if any alert() ran)


# ----------------------------------------------------------------------------- reviewing


def test_review_a_potential_match_with_the_keyboard_then_see_it_in_fhir(
    ui_server: Any, signed_in: Callable[..., Any]
) -> None:
    first, first_golden = submit(
        ui_server, "openmrs", patient("openmrs", "p1", "Akello", "Atim", birth_date="1979-03-03")
    )
    second, second_golden = submit(
        ui_server,
        "lims",
        patient("lims", "p2", "Grace", "Atim", birth_date="1979-03-03", phone=None),
    )
    assert first_golden != second_golden
    page = signed_in("rita")
    page.goto(f"{ui_server.base_url}/ui/review/potential")
    page.locator("tr", has_text="Grace Atim").get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name=re.compile("against the thresholds"))).to_be_visible()
    assert page.locator("table", has_text="jaro-winkler").count() > 0  # field by field
    with page.expect_navigation():
        page.keyboard.press("l")  # "Same person (link)"
    assert golden_of(ui_server, second) == golden_of(ui_server, first)
    # Back to the decided item and reload: nothing is sent again, the page says it is done.
    page.go_back()
    page.reload()
    assert page.get_by_role("button", name=re.compile("Same person")).count() == 0


def test_two_reviewers_deciding_the_same_item(
    ui_server: Any, signed_in: Callable[..., Any]
) -> None:
    submit(
        ui_server, "openmrs", patient("openmrs", "t1", "Odongo", "Ocen", birth_date="1966-06-06")
    )
    submit(
        ui_server,
        "dhis2",
        patient("dhis2", "t2", "Peter", "Ocen", birth_date="1966-06-06", phone=None),
    )
    rita, dave = signed_in("rita"), signed_in("dave")
    rita.goto(f"{ui_server.base_url}/ui/review/potential")
    item = rita.locator("tr", has_text="Peter Ocen").get_by_role("link", name="Review")
    url = f"{ui_server.base_url}{item.get_attribute('href')}"
    rita.goto(url)
    dave.goto(url)
    with rita.expect_navigation():
        rita.get_by_role("button", name=re.compile("Not the same person")).click()
    dave.get_by_role("button", name=re.compile("New person")).click()
    expect(dave.get_by_role("alert")).to_contain_text(
        "Another reviewer, rita, already decided this item"
    )


def test_break_out_then_revert(ui_server: Any, signed_in: Callable[..., Any]) -> None:
    first, golden = submit(ui_server, "openmrs", patient("openmrs", "b1", "Sarah", "Nalwoga"))
    second, same = submit(ui_server, "dhis2", patient("dhis2", "b2", "Sarah", "Nalwoga"))
    assert same == golden
    page = signed_in("rita")
    page.goto(f"{ui_server.base_url}/ui/people/{golden}")
    page.get_by_label("Reason").first.fill("two different women")
    page.get_by_role("button", name="Break out").first.click()
    expect(page.get_by_role("status")).to_contain_text("broken out")
    assert golden_of(ui_server, first) != golden_of(ui_server, second)
    history = page.locator("table.history").inner_text()
    assert "broke out" in history and "two different women" in history and "rita" in history
    page.get_by_role("button", name="Undo").click()
    expect(page.get_by_role("status")).to_contain_text("reverted")
    assert golden_of(ui_server, first) == golden_of(ui_server, second) == golden


def test_a_conflict_resolved(ui_server: Any, signed_in: Callable[..., Any]) -> None:
    """x is joined by hand to John's person, then updated to look like Aisha: a conflict,
    which the reviewer settles by moving x to Aisha."""
    aisha, aisha_golden = submit(
        ui_server, "openmrs", patient("openmrs", "c1", "Aisha", "Kirabo", birth_date="1991-02-02")
    )
    john = patient("lims", "c2", "John", "Okot", birth_date="1970-07-07", gender="male")
    john["telecom"] = [{"system": "phone", "value": "0711111111"}]
    _, john_golden = submit(ui_server, "lims", john)
    peter = patient("dhis2", "c3", "Peter", "Mugisha", birth_date="1950-05-05", gender="male")
    peter["telecom"] = [{"system": "phone", "value": "0755555555"}]
    x, _ = submit(ui_server, "dhis2", peter)
    page = signed_in("rita")
    page.goto(f"{ui_server.base_url}/ui/people/{john_golden}")
    page.get_by_label("Id of the source record to join").fill(x)
    page.get_by_role("button", name="Join", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("joined")
    assert golden_of(ui_server, x) == john_golden
    submit(ui_server, "dhis2", patient("dhis2", "c3", "Aisha", "Kirabo", birth_date="1991-02-02"))
    assert golden_of(ui_server, x) == john_golden  # the person's decision held: a conflict
    page.goto(f"{ui_server.base_url}/ui/review/conflict/next")
    expect(page.locator(".pair")).to_contain_text("Aisha Kirabo")
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile("Same person")).click()
    assert golden_of(ui_server, x) == golden_of(ui_server, aisha) == aisha_golden


# ----------------------------------------------------------------------------- roles, CSRF


def test_a_reviewer_cannot_manage_users_or_change_rules(
    ui_server: Any, signed_in: Callable[..., Any]
) -> None:
    page = signed_in("rita")
    assert page.get_by_role("link", name="Users").count() == 0
    for path in ("/ui/users", "/ui/imports", "/ui/rules/edit", "/ui/rules/versions"):
        response = page.goto(f"{ui_server.base_url}{path}")
        assert response is not None and response.status == 403, path
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    # Posting the users form with the reviewer's own valid CSRF token is refused too.
    token = _csrf(page)
    response = page.request.post(
        f"{ui_server.base_url}/ui/users",
        form={"csrf_token": token, "username": "mallory", "password": PASSWORD, "role": "admin"},
    )
    assert response.status == 403
    # The rules are shown to a reviewer read only; changing them is refused on the server.
    page.goto(f"{ui_server.base_url}/ui/rules")
    expect(page.get_by_role("heading", name="Decision rules", exact=True)).to_be_visible()
    assert page.get_by_role("link", name="Change the rules").count() == 0
    for path in ("/ui/rules/check", "/ui/rules/restore", "/ui/rules/versions/1/activate"):
        refused = page.request.post(
            f"{ui_server.base_url}{path}", form={"csrf_token": token, "content": "{}"}
        )
        assert refused.status == 403, path


def _csrf(page: Any) -> str:
    page.goto(page.url.split("/ui/")[0] + "/ui/account")
    return str(page.locator("input[name=csrf_token]").first.get_attribute("value"))


def test_an_auditor_can_read_the_trail_but_not_act(
    ui_server: Any, signed_in: Callable[..., Any]
) -> None:
    first, golden = submit(ui_server, "openmrs", patient("openmrs", "a1", "Ruth", "Apio"))
    submit(ui_server, "dhis2", patient("dhis2", "a2", "Ruth", "Apio"))
    page = signed_in("otto")
    assert page.get_by_role("link", name="Find people").count() == 0
    page.goto(f"{ui_server.base_url}/ui/audit")
    expect(page.get_by_role("heading", name="Audit trail")).to_be_visible()
    response = page.goto(f"{ui_server.base_url}/ui/people/{golden}")
    assert response is not None and response.status == 403
    token = _csrf(page)
    refused = page.request.post(
        f"{ui_server.base_url}/ui/records/{first}/break", form={"csrf_token": token}
    )
    assert refused.status == 403
    assert golden_of(ui_server, first) == golden


def test_a_stale_csrf_token_is_refused(ui_server: Any, signed_in: Callable[..., Any]) -> None:
    first, golden = submit(ui_server, "openmrs", patient("openmrs", "s1", "Betty", "Akot"))
    submit(ui_server, "dhis2", patient("dhis2", "s2", "Betty", "Akot"))
    page = signed_in("rita")
    page.goto(f"{ui_server.base_url}/ui/people/{golden}")
    stale = str(page.locator("input[name=csrf_token]").first.get_attribute("value"))
    # Signing out and in again starts a new session: forms of the old one are stale.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile("/ui/login"))
    sign_in(page, ui_server.base_url, "rita")
    response = page.request.post(
        f"{ui_server.base_url}/ui/records/{first}/break",
        form={"csrf_token": stale, "back": golden},
    )
    assert response.status == 403
    assert "This form has expired" in response.text()
    assert golden_of(ui_server, first) == golden  # nothing changed


# ----------------------------------------------------------------------------- accessibility


MAIN_PAGES = [
    ("dashboard", "/ui/"),
    ("people", "/ui/people?name=nakato"),
    ("review", "/ui/review"),
    ("potential", "/ui/review/potential"),
    ("rules", "/ui/rules"),
    ("pair-test", "/ui/rules/test"),
    ("users", "/ui/users"),
    ("uploads", "/ui/imports"),
    ("rules-edit", "/ui/rules/edit"),
    ("rules-versions", "/ui/rules/versions"),
    ("audit", "/ui/audit"),
    ("account", "/ui/account"),
]


def _review_href(page: Any, queue_url: str, text: str) -> str:
    """The address of the queue's item whose row holds ``text``, on whichever page of the
    queue it is (oldest first: the module's earlier tests leave items before it)."""
    page.goto(queue_url)
    for _ in range(20):
        row = page.locator("tr", has_text=text).get_by_role("link", name="Review")
        if row.count():
            return str(row.first.get_attribute("href"))
        with page.expect_navigation():
            page.locator("a[rel=next]").first.click()
    raise AssertionError(f"no item of {text} in {queue_url}")


def test_the_main_pages_are_accessible_and_photographed(
    ui_server: Any, signed_in: Callable[..., Any], new_context: Callable[..., Any], tmp_path: Path
) -> None:
    aisha, golden = submit(ui_server, "openmrs", patient("openmrs", "m1", "Aisha", "Nakato"))
    submit(ui_server, "dhis2", patient("dhis2", "m2", "Aysha", "Nakato"))
    submit(ui_server, "lims", patient("lims", "m3", "Grace", "Nakato", phone=None))
    login = new_context().new_page()
    login.goto(f"{ui_server.base_url}/ui/login")
    check_accessibility(login)
    screenshot(login, "login", tmp_path)
    page = signed_in("ada")
    item = _review_href(page, f"{ui_server.base_url}/ui/review/potential", "Grace Nakato")
    pages = [*MAIN_PAGES, ("person", f"/ui/people/{golden}"), ("item", item)]
    for name, path in pages:
        response = page.goto(f"{ui_server.base_url}{path}")
        assert response is not None and response.status == 200, (path, response and response.status)
        check_accessibility(page)
        shot = screenshot(page, name, tmp_path)
        assert shot.stat().st_size > 10_000
    del aisha


def test_every_control_can_be_reached_with_the_keyboard(
    ui_server: Any, signed_in: Callable[..., Any]
) -> None:
    page = signed_in("rita")
    page.goto(f"{ui_server.base_url}/ui/people")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    seen = set()
    for _ in range(30):
        page.keyboard.press("Tab")
        seen.add(page.evaluate("document.activeElement.id || document.activeElement.textContent"))
    assert {"name", "birth_date", "gender", "identifier", "cruid", "system"} <= seen


def test_the_ui_needs_no_client_certificate(ui_server: Any) -> None:
    """A plain HTTPS client (no certificate) gets the sign-in page, with the security
    headers."""
    with httpx.Client(
        base_url=ui_server.base_url, verify=ui_server.ssl_context(), timeout=30
    ) as client:
        response = client.get("/ui/login")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert "script-src 'self'" in csp
    assert response.headers["x-frame-options"] == "DENY"


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


# ----------------------------------------------------------------------------- French


def _english_messages() -> list[str]:
    """English messages of the catalogue whose French differs, longest first (a page in
    French must show none of them)."""
    import io

    from babel.messages.pofile import read_po

    po = Path(__file__).resolve().parents[2] / "src/clientregistry/ui/locale/fr/LC_MESSAGES"
    catalog = read_po(io.BytesIO((po / "messages.po").read_bytes()))
    out = []
    for message in catalog:
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        for english in ids:
            visible = re.sub(r"%\(\w+\)[sd]", "", english).strip(" .:;")
            if len(visible) >= 4 and " " in visible and english not in strings:
                out.extend(part.strip() for part in re.split(r"%\(\w+\)[sd]", english))
    return sorted({p for p in out if len(p) >= 6 and " " in p}, key=len, reverse=True)


def test_french_pages_have_no_untranslated_strings(
    ui_server: Any, signed_in: Callable[..., Any], tmp_path: Path
) -> None:
    _, golden = submit(ui_server, "openmrs", patient("openmrs", "fr1", "Amina", "Nanyonga"))
    submit(ui_server, "dhis2", patient("dhis2", "fr2", "Aminah", "Nanyonga"))
    submit(ui_server, "lims", patient("lims", "fr3", "Joy", "Nanyonga", phone=None))
    page = signed_in("ada", locale="fr-FR")  # Accept-Language: fr-FR
    english = _english_messages()
    assert len(english) > 100
    pages = [*MAIN_PAGES, ("person", f"/ui/people/{golden}"), ("item", "/ui/review/potential/next")]
    for name, path in pages:
        response = page.goto(f"{ui_server.base_url}{path}")
        assert response is not None and response.status == 200, path
        assert page.locator("html").get_attribute("lang") == "fr"
        text = page.evaluate("document.body.innerText")
        svg = page.evaluate(
            "Array.from(document.querySelectorAll('svg title, svg desc, [aria-label]'))"
            ".map(e => e.textContent + ' ' + (e.getAttribute('aria-label') || '')).join(' ')"
        )
        left = [m for m in english if m in text or m in svg]
        assert left == [], f"{path}: English left on a French page: {left[:10]}"
        if name in ("dashboard", "item"):
            screenshot(page, f"{name}-fr", tmp_path)
    # Choosing English on the account page overrides the browser.
    page.goto(f"{ui_server.base_url}/ui/account")
    page.get_by_label("Langue des pages").select_option("en")
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.get_by_role("status")).to_have_text("Your language is saved.")


def _french_page_left(page: Any, english: list[str]) -> list[str]:
    """English messages left on a page in French."""
    assert page.locator("html").get_attribute("lang") == "fr"
    text = page.evaluate("document.body.innerText")
    labels = page.evaluate(
        "Array.from(document.querySelectorAll('svg title, svg desc, [aria-label]'))"
        ".map(e => e.textContent + ' ' + (e.getAttribute('aria-label') || '')).join(' ')"
    )
    return [m for m in english if m in text or m in labels]


# ----------------------------------------------------------------------------- bulk upload

GIVEN = ["Aisha", "Grace", "Moses", "Peter", "Ruth", "Joy", "Sarah", "John", "Betty", "Amina"]
FAMILY = ["Kato", "Apio", "Okot", "Nakato", "Mugisha", "Atim", "Ocen", "Birungi", "Kirabo"]


def _clinic_csv(rows: int) -> str:
    """A clinic's CSV with its own column names; every tenth row is an earlier row's person
    again under another id (an automatic link)."""
    lines = ["clinic_no,first,last,sex,dob,tel"]
    for n in range(1, rows + 1):
        person = n - 1 if n % 10 == 0 else n
        given, family = GIVEN[person % len(GIVEN)], FAMILY[(person // 10) % len(FAMILY)]
        dob = f"19{50 + person % 50:02d}-{1 + person % 12:02d}-{1 + person % 28:02d}"
        sex = "f" if person % 2 else "m"
        lines.append(f"up-{n},{given},{family}{person},{sex},{dob},07{person:08d}")
    return "\n".join(lines) + "\n"


def test_a_csv_uploaded_with_a_mapping_its_progress_and_its_report(
    ui_server: Any, signed_in: Callable[..., Any], tmp_path: Path
) -> None:
    import csv
    import zipfile

    rows = 2500
    source = tmp_path / "clinic.csv"
    source.write_text(_clinic_csv(rows), encoding="utf-8")
    page = signed_in("ada")
    polled: list[str] = []
    page.on("response", lambda r: polled.append(r.url) if r.url.endswith("/progress") else None)
    page.goto(f"{ui_server.base_url}/ui/imports")
    page.get_by_label("File (CSV, FHIR NDJSON or a Bundle)").set_input_files(str(source))
    page.get_by_label("Submitted as the client system").select_option("lims")
    for element, column in {
        "Patient id": "clinic_no",
        "Given names": "first",
        "Family name": "last",
        "Gender": "sex",
        "Birth date": "dob",
        "Phone": "tel",
    }.items():
        page.get_by_label(element, exact=True).fill(column)
    with page.expect_navigation():
        page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.get_by_role("status").first).to_contain_text("the registry is importing it")
    expect(page.locator("progress")).to_be_visible()  # the job has barely started
    check_accessibility(page)
    screenshot(page, "upload-progress", tmp_path)
    # The script polls the progress and reloads the page when the import is over.
    expect(page.locator(".state-done")).to_be_visible(timeout=300_000)
    assert polled, "the progress bar's script never asked for the progress"
    assert page.locator("progress").count() == 0
    expect(page.locator("table.report tbody tr").first).to_contain_text("up-1")
    check_accessibility(page)
    screenshot(page, "upload-report", tmp_path)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the report (CSV)").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    report = list(csv.DictReader(text.splitlines()))
    assert len(report) == rows
    assert [line["patient_id"] for line in report[:3]] == ["up-1", "up-2", "up-3"]
    assert all(line["record_id"] and line["CRUID"] and line["outcome"] for line in report)
    assert all(line["source_id"] == "lims" for line in report)
    outcomes = {line["outcome"] for line in report}
    assert {"new-person", "linked"} <= outcomes, outcomes
    again = {line["patient_id"]: line["CRUID"] for line in report}
    assert again["up-10"] == again["up-9"]  # the same person under two ids: one CRUID
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the report (XLSX)").click()
    xlsx = Path(download.value.path())
    assert xlsx.read_bytes()[:4] == b"PK\x03\x04"
    with zipfile.ZipFile(xlsx) as book:
        workbook = book.read("xl/workbook.xml").decode()
    assert all(f'name="{s}"' in workbook for s in ("Summary", "Rows", "To review", "Errors"))
    # The same pages in French, for an admin whose browser asks for French.
    add_account(ui_server, "ines", "admin")
    french = signed_in("ines", locale="fr-FR")
    for path in (page.url.split("?")[0], f"{ui_server.base_url}/ui/imports"):
        response = french.goto(path)
        assert response is not None and response.status == 200
        left = _french_page_left(french, _english_messages())
        assert left == [], f"{path}: English left on a French page: {left[:10]}"


# ----------------------------------------------------------------------------- rules


def test_rules_checked_tried_put_in_force_and_restored(
    ui_server: Any, signed_in: Callable[..., Any], tmp_path: Path
) -> None:
    import json

    page = signed_in("ada")
    page.goto(f"{ui_server.base_url}/ui/rules")
    page.get_by_role("link", name="Change the rules").click()
    textarea = page.get_by_label("The rules (JSON)")
    document = json.loads(textarea.input_value())
    invalid = tmp_path / "strict.json"
    invalid.write_text('{"rules": [{"name": "strict", "matchingType": "deterministic"}]}')
    page.get_by_label("Or upload a rules file (it replaces the text above)").set_input_files(
        str(invalid)
    )
    page.get_by_role("button", name="Check and try the rules").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("the decision rules are not valid")
    expect(alert).to_contain_text("strict.json: the decision rules are not valid")
    expect(alert).to_contain_text("rules[0]")
    check_accessibility(page)
    screenshot(page, "rules-invalid", tmp_path)
    document["rules"][0]["autoMatchThreshold"] += 1.0
    textarea = page.get_by_label("The rules (JSON)")
    textarea.fill(json.dumps(document, indent=2))
    page.get_by_label("Note (why the change)").fill("a stricter automatic link")
    page.get_by_role("button", name="Check and try the rules").click()
    expect(page.get_by_role("status").first).to_contain_text("The rules are valid")
    expect(page.get_by_role("heading", name="What would change")).to_be_visible(timeout=300_000)
    expect(page.locator("table.counts")).to_contain_text("Persons merged")
    check_accessibility(page)
    screenshot(page, "rules-dry-run", tmp_path)
    dry_run = page.url.split("?")[0]
    add_account(ui_server, "jules", "admin")
    french = signed_in("jules", locale="fr-FR")
    for path in (dry_run, f"{ui_server.base_url}/ui/rules/versions"):
        response = french.goto(path)
        assert response is not None and response.status == 200
        left = _french_page_left(french, _english_messages())
        assert left == [], f"{path}: English left on a French page: {left[:10]}"
    heading = page.get_by_role("heading", level=1).inner_text()
    version = re.search(r"\d+", heading)
    assert version is not None
    page.get_by_role("button", name=f"Put version {version.group()} in force").click()
    expect(page.get_by_text(f"Rules version {version.group()} is in force.")).to_be_visible(
        timeout=300_000
    )
    page.goto(f"{ui_server.base_url}/ui/rules/versions")
    row = page.locator("table.versions tr", has_text="a stricter automatic link")
    expect(row).to_contain_text("in force")
    check_accessibility(page)
    screenshot(page, "rules-in-force", tmp_path)
    page.get_by_role("button", name="Restore the previous rules").click()
    expect(page.get_by_text(re.compile(r"Rules version \d+ is in force\."))).to_be_visible(
        timeout=300_000
    )
    page.goto(f"{ui_server.base_url}/ui/rules/versions")
    expect(
        page.locator("table.versions tr", has_text="a stricter automatic link")
    ).not_to_contain_text("in force")
    # The audit trail holds who changed the rules.
    page.goto(f"{ui_server.base_url}/ui/audit?agent=ada&event_type=rules-store")
    expect(page.locator("main table")).to_contain_text("ada")
