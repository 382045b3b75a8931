"""Side by side: pairwise F1 of several rules files on every evaluation set, in one process.

``python bench/rules_ab.py [--sets febrl3 census_register ...] default my_rules.json ...``
clusters each set with each rules file (``default``: the shipped default rules) as ``dedupe``
does (:class:`~clientregistry.batch.dedupe.Deduplicator`, cannot-links on, same records in the
same order) and prints F1 (precision / recall) per set and rules file, then a Markdown table.
For quick iteration on decision rules; not a test, and no timing (see ``run_all.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cannot_links  # noqa: E402
from cannot_links import (  # noqa: E402
    DEFAULT_RECORD_ID_SYSTEMS,
    Deduplicator,
    Matcher,
    SourceRecord,
    default_rules,
    ensure_dataset,
    pairwise_scores,
    parse_rules,
    read_patients,
    read_two_columns,
)

SETS = (*cannot_links.SETS, "census_register_s2")
"""The cannot-link sets, and the census + register of another seed (a check against fitting
one generator's draw)."""


def f1_of(raw: dict[str, object], ndjson: Path, truth: Path) -> dict[str, float]:
    """Pairwise F1, precision and recall of ``dedupe``'s clusters under rules ``raw``."""
    matcher = Matcher(parse_rules(raw), record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    dedup = Deduplicator(matcher)
    for record in read_patients(ndjson):
        if isinstance(record, SourceRecord):
            dedup.add(record.record_id, record.resource)
    entity_of = read_two_columns(truth, "patient_id", "entity_id")
    scores = pairwise_scores(dict(dedup.golden_ids()), entity_of).to_json()
    return {k: round(scores[k], 4) for k in ("f1", "precision", "recall")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rules", nargs="+", help="rules files, or 'default'")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    args = parser.parse_args(argv)
    rules = {
        name: default_rules().to_json() if name == "default" else json.loads(Path(name).read_text())
        for name in args.rules
    }
    rows = []
    for name in args.sets:
        ndjson, truth = ensure_dataset(name)
        row = {label: f1_of(raw, ndjson, truth) for label, raw in rules.items()}
        print(json.dumps({name: row}), flush=True)
        rows.append((name, row))
    print("\n| set | " + " | ".join(rules) + " |")
    print("|---|" + "---|" * len(rules))
    for name, row in rows:
        cells = [f"{r['f1']:.4f} ({r['precision']:.4f} / {r['recall']:.4f})" for r in row.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
