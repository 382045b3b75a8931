"""What cannot-links do to accuracy: ``dedupe``'s clusters with and without them, per set.

``python bench/cannot_links.py [--sets febrl3 census_register healthcare_10k ...]`` builds any
missing data set (``bench/datasets.py``), then clusters each twice in this process with the
default rules (:class:`~clientregistry.batch.dedupe.Deduplicator` with ``cannot_links`` on
and off, same records, same order) and prints pairwise precision, recall and F1 of both, with
how many records the check kept apart. Not a test: run it on demand, results into
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
from clientregistry.matching.matcher import Matcher  # noqa: E402
from clientregistry.matching.rules import default_rules  # noqa: E402

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


def run(ndjson: Path, truth: Path, cannot_links: bool) -> dict[str, float]:
    matcher = Matcher(default_rules(), record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    dedup = Deduplicator(matcher, cannot_links=cannot_links)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    args = parser.parse_args(argv)
    rows = []
    for name in args.sets:
        ndjson, truth = ensure_dataset(name)
        before = run(ndjson, truth, cannot_links=False)
        after = run(ndjson, truth, cannot_links=True)
        print(json.dumps({name: {"without": before, "with": after}}), flush=True)
        rows.append((name, before, after))
    print(
        "\n| set | F1 without → with | precision without → with | recall without → with |"
        " records kept apart | s without / with |"
    )
    print("|---|---|---|---|---|---|")
    for name, b, a in rows:
        print(
            f"| {name} | {b['f1']:.4f} → {a['f1']:.4f} | {b['precision']:.4f} → "
            f"{a['precision']:.4f} | {b['recall']:.4f} → {a['recall']:.4f} | "
            f"{a['kept_apart']} | {b['seconds']} / {a['seconds']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
