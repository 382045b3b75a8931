"""Splink (DuckDB backend) as the peer to beat: dedupe a FHIR Patient NDJSON file.

The configuration is the one a competent Splink user would write for these fields: name
comparisons with term-frequency adjustments, a date-of-birth comparison, exact/levenshtein
identifiers and phone, exact postcode/city; u by random sampling, m by EM over two blocking
rules, the prior from deterministic rules, then predict and connected-components clustering at
one probability threshold. Fields that the data set does not have (e.g. FEBRL has no phone or
gender, OpenCR no address) are left out of the model and of the blocking rules.

``python bench/splink_peer.py IN.ndjson --output CLUSTERS.csv [--truth TRUTH.csv]`` prints a
JSON summary (seconds from load to clusters written, pairs predicted, peak RSS in MB, and the
pairwise scores when a truth file is given). Run one data set per process so that the peak RSS
belongs to that data set alone; :func:`run_splink_subprocess` does that.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

NATIONAL_ID_SYSTEMS = (
    "http://example.org/fhir/sid/national-id",
    "http://clientregistry.org/nationalid",
)
ART_NUMBER_SYSTEM = "http://clientregistry.org/artnumber"
COLUMNS = (
    "unique_id",
    "given",
    "family",
    "birth_date",
    "birth_year",
    "gender",
    "phone",
    "national_id",
    "art_number",
    "city",
    "postcode",
    "address_line",
)
MIN_FILLED = 0.05  # a column takes part only if at least this share of records has it

# Blocking rules for prediction and for the EM sessions, as column tuples.
PREDICTION_BLOCKS = (
    ("family", "birth_year"),
    ("given", "family"),
    ("given", "birth_date"),
    ("phone",),
    ("national_id",),
    ("art_number",),
    ("birth_date", "postcode"),
)
EM_BLOCKS = (("given", "family"), ("birth_date",))
DETERMINISTIC_BLOCKS = (("given", "family", "birth_date"), ("national_id",))
DETERMINISTIC_RECALL = 0.7


def _lower(value: object) -> str | None:
    text = str(value).strip().lower() if value is not None else ""
    return text or None


def flatten(patient: dict[str, Any]) -> dict[str, str | None]:
    """One row of Splink input columns from a FHIR Patient."""
    names = patient.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "official"), names[0])
    idents = patient.get("identifier") or []
    national = next(
        (i.get("value") for i in idents if i.get("system") in NATIONAL_ID_SYSTEMS), None
    )
    art = next((i.get("value") for i in idents if i.get("system") == ART_NUMBER_SYSTEM), None)
    phones = [t.get("value") for t in patient.get("telecom") or [] if t.get("system") == "phone"]
    phone = re.sub(r"\D", "", phones[0]) if phones and phones[0] else ""
    address = (patient.get("address") or [{}])[0]
    birth_date = patient.get("birthDate")
    return {
        "unique_id": patient["id"],
        "given": _lower((name.get("given") or [None])[0]),
        "family": _lower(name.get("family")),
        "birth_date": birth_date,
        "birth_year": birth_date[:4] if birth_date else None,
        "gender": patient.get("gender"),
        "phone": phone or None,
        "national_id": _lower(national),
        "art_number": _lower(art),
        "city": _lower(address.get("city")),
        "postcode": _lower(address.get("postalCode")),
        "address_line": _lower(" ".join(address.get("line") or [])),
    }


def load_frame(ndjson_path: str | Path) -> pd.DataFrame:
    with Path(ndjson_path).open("rb") as fh:
        rows = [flatten(orjson.loads(line)) for line in fh if line.strip()]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def build_settings(available: set[str]) -> Any:
    """The Splink settings for the columns present in the data."""
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    candidates: list[tuple[str, Any]] = [
        ("given", cl.NameComparison("given").configure(term_frequency_adjustments=True)),
        ("family", cl.NameComparison("family").configure(term_frequency_adjustments=True)),
        (
            "birth_date",
            cl.DateOfBirthComparison(
                "birth_date", input_is_string=True, datetime_format="%Y-%m-%d"
            ),
        ),
        ("gender", cl.ExactMatch("gender")),
        ("phone", cl.LevenshteinAtThresholds("phone", [1, 2])),
        ("national_id", cl.LevenshteinAtThresholds("national_id", [1, 2])),
        ("art_number", cl.LevenshteinAtThresholds("art_number", [1, 2])),
        ("postcode", cl.ExactMatch("postcode")),
        ("city", cl.ExactMatch("city").configure(term_frequency_adjustments=True)),
        ("address_line", cl.JaroWinklerAtThresholds("address_line", [0.95, 0.85])),
    ]
    comparisons = [c for col, c in candidates if col in available]
    blocks: list[Any] = [block_on(*c) for c in PREDICTION_BLOCKS if available.issuperset(c)]
    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=blocks,
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


def run_splink(
    ndjson_path: str | Path,
    output_csv: str | Path,
    *,
    threshold: float = 0.9,
    max_pairs: float = 1e6,
    seed: int = 42,
    model_json: str | Path | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Dedupe ``ndjson_path`` with Splink and write ``patient_id,golden_id`` to ``output_csv``.

    Returns seconds (load to clusters written), pairs predicted at the threshold, clusters,
    peak RSS in MB and the blocking rules / columns used.
    """
    from splink import DuckDBAPI, Linker, block_on

    start = time.perf_counter()
    frame = load_frame(ndjson_path)
    available = {c for c in COLUMNS[1:] if frame[c].notna().mean() >= MIN_FILLED}
    settings = build_settings(available)

    db_api = DuckDBAPI()
    table = db_api.register(frame, dataset_display_name=Path(ndjson_path).stem)
    linker = Linker(table, settings, log_level=logging.INFO if verbose else logging.WARNING)

    deterministic: list[Any] = [
        block_on(*c) for c in DETERMINISTIC_BLOCKS if available.issuperset(c)
    ]
    linker.training.estimate_probability_two_random_records_match(
        deterministic, recall=DETERMINISTIC_RECALL
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
    for cols in EM_BLOCKS:
        if available.issuperset(cols):
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*cols))

    predictions = linker.inference.predict(threshold_match_probability=threshold)
    pairs = int(predictions.as_duckdbpyrelation().aggregate("count(*)").fetchall()[0][0])
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold
    )
    out = clusters.as_duckdbpyrelation().select("unique_id", "cluster_id").df()
    out.columns = ["patient_id", "golden_id"]
    Path(output_csv).parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(output_csv, index=False)
    seconds = time.perf_counter() - start

    if model_json is not None:
        linker.misc.save_model_to_json(str(model_json), overwrite=True)
    import splink

    return {
        "tool": f"splink {splink.__version__} (duckdb)",
        "input": str(ndjson_path),
        "records": len(frame),
        "seconds": round(seconds, 2),
        "pairs_predicted": pairs,
        "clusters": int(out["golden_id"].nunique()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threshold": threshold,
        "columns": sorted(available),
        "blocking_rules": [" & ".join(c) for c in PREDICTION_BLOCKS if available.issuperset(c)],
    }


def run_splink_subprocess(
    ndjson_path: str | Path, output_csv: str | Path, *extra_args: str
) -> dict[str, Any]:
    """Run :func:`run_splink` in a fresh interpreter (fair peak-RSS numbers)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), str(ndjson_path)]
    cmd += ["--output", str(output_csv), *extra_args]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="FHIR Patient NDJSON")
    parser.add_argument("--output", type=Path, required=True, help="CSV patient_id,golden_id")
    parser.add_argument("--truth", type=Path, help="truth CSV patient_id,entity_id to score")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--max-pairs", type=float, default=1e6, help="u-sampling pairs")
    parser.add_argument("--model-json", type=Path, help="also save the trained model here")
    parser.add_argument("--verbose", action="store_true", help="show Splink's log")
    args = parser.parse_args(argv)
    result = run_splink(
        args.input,
        args.output,
        threshold=args.threshold,
        max_pairs=args.max_pairs,
        model_json=args.model_json,
        verbose=args.verbose,
    )
    if args.truth is not None:
        from clientregistry.batch.evaluate import evaluate_files

        result["scores"] = evaluate_files(args.output, args.truth).to_json()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
