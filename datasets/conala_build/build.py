"""Convert the CoNaLa human grades of codegen-metrics into judgealign label rows.

Source: JetBrains-Research/codegen-metrics (commit b630570),
``data/to-grade/conala/conala-human-grades.json`` (Apache-2.0). Run once by hand::

    python datasets/conala_build/build.py path/to/conala-human-grades.json

and commit the resulting ``datasets/conala/labels.jsonl``. Tests never run this script.

Each (intent, candidate system) pair becomes one item ``conala-<index>-<system>``, where
``<index>`` is the 0-based position of the intent in the source list (4 digits). The reference
snippet graded as a candidate is system ``snippet``. Every grader's grade is one label row
(``rater`` = the grader id, ``rationale`` empty: the source has none). The reference snippet is
kept out of ``inputs`` (it would give the answer away) and stored in the extra key
``reference`` (a list: a few intents have several reference variants); ``system`` names the
candidate's system. Text is copied unchanged, tokenizer artefacts such as ``<unk>`` included.
Candidates that are empty strings (two in the source) are left out: the rubric's ``snippet``
input is required, so there is nothing to judge.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path

SYSTEMS = ["baseline", "tranx-annot", "best-tranx", "best-tranx-rerank", "codex", "snippet"]
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "conala" / "labels.jsonl"


def grader_key(name: str) -> tuple[int, str]:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (int(digits) if digits else 0, name)


def convert(records: list[dict]) -> list[dict]:
    rows = []
    for index, rec in enumerate(records):
        references = list(rec["snippet"])
        for system in SYSTEMS:
            # the reference graded as a candidate: its first variant (the graders saw the
            # variants one by one; the source file merges their grades per intent)
            candidate = references[0] if system == "snippet" else rec[system]
            if not candidate.strip():
                continue  # an empty output cannot be judged: the snippet input is required
            grades = rec.get(f"grade-{system}") or {}
            for grader in sorted(grades, key=grader_key):
                rows.append({
                    "item_id": f"conala-{index:04d}-{system}",
                    "inputs": {"intent": rec["intent"], "snippet": candidate},
                    "dimension": "usefulness",
                    "score": int(grades[grader]),
                    "rationale": "",
                    "rater": grader,
                    "system": system,
                    "reference": references,
                })
    return rows


def stats(path: Path) -> None:
    """Print the numbers quoted in datasets/conala/DATASET.md."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    items: dict[str, list[int]] = {}
    system: dict[str, str] = {}
    text: dict[str, tuple[str, str]] = {}
    for r in rows:
        items.setdefault(r["item_id"], []).append(r["score"])
        system[r["item_id"]] = r["system"]
        text[r["item_id"]] = (r["inputs"]["intent"], r["inputs"]["snippet"])
    print(f"{len(rows)} grades, {len(items)} items, {len({r['rater'] for r in rows})} graders")
    print("grades:", sorted(Counter(r["score"] for r in rows).items()))
    print("graders per item:", sorted(Counter(len(v) for v in items.values()).items()),
          "median", statistics.median(len(v) for v in items.values()))
    print("lower median per item:",
          sorted(Counter(statistics.median_low(v) for v in items.values()).items()))
    for s in SYSTEMS:
        ids = [k for k in items if system[k] == s]
        grades = [g for k in ids for g in items[k]]
        print(f"  {s}: mean {statistics.mean(grades):.2f}",
              sorted(Counter(statistics.median_low(items[k]) for k in ids).items()))
    spread = [max(v) - min(v) for v in items.values()]
    print(f"spread >= 2: {sum(x >= 2 for x in spread) / len(spread):.1%}, "
          f">= 3: {sum(x >= 3 for x in spread) / len(spread):.1%}, "
          f"unanimous: {sum(x == 0 for x in spread) / len(spread):.1%}")
    pairs = [abs(a - b) for v in items.values() for a, b in combinations(v, 2)]
    print(f"grader pairs: identical {sum(d == 0 for d in pairs) / len(pairs):.1%}, "
          f"mean |difference| {statistics.mean(pairs):.2f}")
    twins = Counter(text.values())
    print(f"identical (intent, snippet) groups: {sum(n > 1 for n in twins.values())}, "
          f"items in them: {sum(n for n in twins.values() if n > 1)}")
    print("candidates with <unk>:", sum("<unk>" in sn for _, sn in text.values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, nargs="?", help="conala-human-grades.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--stats", action="store_true",
                        help="print the statistics of the written labels and exit")
    args = parser.parse_args(argv)
    if args.stats:
        stats(args.out)
        return 0
    if args.source is None:
        parser.error("the source file is required")
    records = json.loads(args.source.read_text(encoding="utf-8"))
    rows = convert(records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    items = {r["item_id"] for r in rows}
    print(f"{len(records)} intents, {len(items)} items, {len(rows)} grades -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
