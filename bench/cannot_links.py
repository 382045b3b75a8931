"""What cannot-links do to accuracy: ``dedupe``'s clusters with and without them, per set.

``python bench/cannot_links.py [--sets febrl3 census_register healthcare_10k ...]`` builds any
missing data set (``bench/datasets.py``), then clusters each in this process with the default
rules (:class:`~clientregistry.batch.dedupe.Deduplicator`, same records, same order) without
cannot-links and with each of :data:`VARIANTS`, and prints pairwise F1, precision and recall
of each, with how many records the check kept apart. Not a test: run it on demand, results into
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_all import ensure_dataset  # noqa: E402

from clientregistry.batch.dedupe import Deduplicator  # noqa: E402
from clientregistry.batch.evaluate import pairwise_scores, read_two_columns  # noqa: E402
from clientregistry.batch.readers import SourceRecord, read_patients  # noqa: E402
from clientregistry.config import DEFAULT_RECORD_ID_SYSTEMS  # noqa: E402
from clientregistry.matching.cannot_link import CannotLinks  # noqa: E402
from clientregistry.matching.matcher import Matcher  # noqa: E402
from clientregistry.matching.rules import default_rules, parse_rules  # noqa: E402

SETS = (
    "febrl1",
    "febrl2",
    "febrl3",
    "febrl4",
    "opencr",
    "synthetic_10k",
    "census_register",
    "healthcare_10k",
    "compound_10k",
)


def run(ndjson: Path, truth: Path, share: float | None, unique: bool) -> dict[str, float]:
    """Cluster with cannot-links whose ``no_match_share`` is ``share`` (None: none), under the
    default rules, with ``"uniqueSystems": "default"`` on their identifier field if
    ``unique``."""
    raw = default_rules().to_json()
    if unique:
        raw["rules"][0]["fields"]["identifier"]["uniqueSystems"] = "default"
    matcher = Matcher(parse_rules(raw), record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    cannot: bool | CannotLinks = False
    if share is not None:
        cannot = CannotLinks(matcher.scorer, no_match_share=share)
    dedup = Deduplicator(matcher, cannot_links=cannot)
    start = time.perf_counter()
    for record in read_patients(ndjson):
        if isinstance(record, SourceRecord):
            dedup.add(record.record_id, record.resource)
    seconds = time.perf_counter() - start
    entity_of = read_two_columns(truth, "patient_id", "entity_id")
    scores = pairwise_scores(dict(dedup.golden_ids()), entity_of).to_json()
    return {
        **{k: round(scores[k], 4) for k in ("f1", "precision", "recall")},
        "kept_apart": dedup.stats.cannot_links,
        "seconds": round(seconds, 1),
    }


VARIANTS: dict[str, tuple[float | None, bool]] = {
    "without": (None, False),
    "shipped": (0.5, False),
    "unique ids only": (1.0, True),
    "unique ids + shipped": (0.5, True),
    "unique ids + any none": (0.0, True),
}
"""(no_match_share, unique identifier systems declared): cannot-links off; the default rules
as shipped (no match with most members; no system declared unique); identifiers only; both;
identifiers or no match with any one member."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    args = parser.parse_args(argv)
    rows = []
    for name in args.sets:
        ndjson, truth = ensure_dataset(name)
        row = {label: run(ndjson, truth, *variant) for label, variant in VARIANTS.items()}
        print(json.dumps({name: row}), flush=True)
        rows.append((name, row))
    labels = list(VARIANTS)
    print("\n| set | " + " | ".join(f"{v}: F1 (P / R) kept apart" for v in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name, row in rows:
        cells = [
            f"{r['f1']:.4f} ({r['precision']:.4f} / {r['recall']:.4f}) {r['kept_apart']}"
            for r in (row[v] for v in labels)
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
