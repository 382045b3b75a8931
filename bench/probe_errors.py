"""Why ``dedupe`` misses or wrongly makes links on one evaluation set: a probe for tuning rules.

``python bench/probe_errors.py census_register [--rules R.json] [--show 20] [--seed 3]``
clusters the set in this process (:class:`~clientregistry.batch.dedupe.Deduplicator`, the
default rules or ``--rules``), prints pairwise F1 / precision / recall, then tallies the
missed true pairs (records of one person in different clusters; only pairs that share a
blocking key, as dedupe compares no others) and the wrong pairs (records of different people
in one cluster, pairs the rules link directly) by score band and by each field's comparison
level, and shows ``--show`` random examples of each with the per-field explanation. Not a
test: it reads the data, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_all import ensure_dataset  # noqa: E402

from clientregistry.batch.dedupe import Deduplicator  # noqa: E402
from clientregistry.batch.evaluate import pairwise_scores, read_two_columns  # noqa: E402
from clientregistry.batch.readers import SourceRecord, read_patients  # noqa: E402
from clientregistry.config import DEFAULT_RECORD_ID_SYSTEMS  # noqa: E402
from clientregistry.matching.matcher import Matcher  # noqa: E402
from clientregistry.matching.rules import default_rules, parse_rules  # noqa: E402


def _band(score: float, potential: float, auto: float) -> str:
    if score >= auto:
        return "auto"
    if score >= potential:
        return "potential"
    return f"none ({int(score // 2 * 2)}..)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set")
    parser.add_argument("--rules", type=Path)
    parser.add_argument("--show", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    ndjson, truth = ensure_dataset(args.set)
    raw = json.loads(args.rules.read_text()) if args.rules else default_rules().to_json()
    matcher = Matcher(parse_rules(raw), record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    dedup = Deduplicator(matcher)
    resources = {}
    for record in read_patients(ndjson):
        if isinstance(record, SourceRecord):
            dedup.add(record.record_id, record.resource)
            resources[record.record_id] = record.resource
    entity_of = read_two_columns(truth, "patient_id", "entity_id")
    golden = dict(dedup.golden_ids())
    print(json.dumps(pairwise_scores(golden, entity_of).to_json()))
    rs = matcher.rules.rule_sets[0]
    tf = dedup.term_counts.tf
    feats = dedup.features
    # every pair sharing a blocking key
    by_key: dict[object, list[int]] = defaultdict(list)
    for i in range(len(dedup.ids)):
        for key in matcher.blocker.keys(feats[i]):
            by_key[key].append(i)
    compared: set[tuple[int, int]] = set()
    for members in by_key.values():
        if len(members) > 200:
            continue
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                compared.add((members[x], members[y]))
    ids = dedup.ids
    missed, wrong = [], []
    for i, j in compared:
        same_truth = entity_of.get(ids[i]) == entity_of.get(ids[j])
        same_cluster = golden[ids[i]] == golden[ids[j]]
        if same_truth and not same_cluster:
            missed.append((i, j))
        elif not same_truth and same_cluster:
            wrong.append((i, j))
    all_true = Counter(entity_of.values())
    n_true = sum(c * (c - 1) // 2 for c in all_true.values())
    print(f"true pairs {n_true}; missed among blocked pairs {len(missed)}; wrong {len(wrong)}")
    rng = random.Random(args.seed)
    for label, pairs in (("MISSED", missed), ("WRONG", wrong)):
        bands: Counter[str] = Counter()
        levels: Counter[tuple[str, str]] = Counter()
        explained = []
        for i, j in pairs:
            result = matcher.scorer.explain(feats[i], feats[j], tf)[0]
            bands[_band(result.score, rs.potential_threshold, rs.auto_threshold)] += 1
            for f in result.fields:
                levels[(f.field, f.level)] += 1
            explained.append((i, j, result))
        print(f"\n=== {label} {len(pairs)} by score band: {dict(sorted(bands.items()))}")
        for (field, level), n in sorted(levels.items()):
            print(f"  {field:12s} {level:40s} {n}")
        for i, j, result in rng.sample(explained, min(args.show, len(explained))):
            print(f"\n{ids[i]} / {ids[j]}  score {result.score:.2f}")
            for f in result.fields:
                print(
                    f"   {f.field:11s} {f.left[:28]:28s} | {f.right[:28]:28s} {f.level:22s}"
                    f" {f.contribution:+.2f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
