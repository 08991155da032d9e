"""Convert SQuALITY's human evaluation into the bundled ``squality`` label set.

Source: nyu-mll/SQuALITY (commit dc08d4f), ``data/human-eval/all-responses.jsonl`` and
``data/v1-3/txt/test.jsonl`` (data CC BY 4.0; the stories are Project Gutenberg texts), kept
unchanged as ``human-eval-all-responses.jsonl`` and ``stories-v1-3-test.jsonl`` in a source
folder given with ``--source`` (a developer's copy of the public files). Run from the repository
root::

    python datasets/squality_build/build.py --source DIR          # (re)write datasets/squality/
    python datasets/squality_build/build.py --source DIR --check  # exit 1 if the files differ

A developer tool: it is not package data, nothing runs it at run time, and tests only exec its
pure functions (``to_level``, ``rationale_for``, ``choose_reference``, the statistics) on data
they make themselves.

What it writes (``datasets/squality/``):

- ``labels.jsonl``: one row per (response, dimension, reviewer). The item is one response of
  one system to one question about one story, id ``sq-<passage>-q<n>-<system>`` (``n`` is the
  question number 1-5 of the stories file). ``inputs`` are the question, the ``response`` and a
  human-written ``reference`` answer to the same question (:func:`choose_reference`: never the
  judged response). ``score`` is the reviewer's 0-100 rating mapped by :func:`to_level` onto
  1-4; ``rationale`` is built by :func:`rationale_for` from the reviewer's comments and the
  spans they point at; ``rater`` is ``worker-<worker_id>``. Extra keys: ``system``,
  ``passage_id``, ``question_number`` and ``rating`` (the unmapped 0-100 rating).
- ``stories/<passage>.txt``: the 20 stories the reviewed responses are about, text unchanged
  (the optional ``story`` input of the rubric, for LMs with a long context).
- ``LICENSE`` and ``GUTENBERG_LICENSE``: the source's licence files, unchanged.
- ``DATASET.md``: the hand-written card, whose block between ``<!-- stats:begin -->`` and
  ``<!-- stats:end -->`` is rendered here from the data (so ``--check`` covers its numbers).

Output is deterministic: rows are sorted by passage id, question, system, dimension, reviewer.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "datasets" / "squality"
EVAL_FILE = "human-eval-all-responses.jsonl"
STORIES_FILE = "stories-v1-3-test.jsonl"
LICENCE_FILES = ("LICENSE", "GUTENBERG_LICENSE")

SYSTEMS = ("bart", "bart-dpr", "human")
DIMENSIONS = ("correctness", "selection", "overall")
# Ratings are 0-100. Level k covers [CUTS[k-2], CUTS[k-1]): 1 = 0-19, 2 = 20-49, 3 = 50-89,
# 4 = 90-100. Fixed bins shared by the three dimensions (a level means the same rating range on
# each); 20 and 90 sit at the edges of the two modes of the bimodal rating histogram (model
# summaries pile up below 20, human ones at 90 and above), 50 splits the middle at the scale's
# midpoint. DATASET.md compares them with quantile bins.
CUTS = (20, 50, 90)
LEVELS = (1, 2, 3, 4)
# A span longer than this is shortened in the rationale: reviewers sometimes highlight a whole
# paragraph, and the comment, not the quoted paragraph, is the feedback worth distilling.
SPAN_LIMIT = 200
STATS_BEGIN = "<!-- stats:begin -->"
STATS_END = "<!-- stats:end -->"


class SourceError(Exception):
    """The source files are not shaped as this converter expects; the message says where."""


# --------------------------------------------------------------------------------------------
# Mapping, rationales, references: pure functions (tested in tests/test_squality.py)
# --------------------------------------------------------------------------------------------


def to_level(rating: float) -> int:
    """Map a 0-100 SQuALITY rating onto the 1-4 scale of the ``squality`` rubric.

    ``[0, 20) -> 1``, ``[20, 50) -> 2``, ``[50, 90) -> 3``, ``[90, 100] -> 4``. Raises
    ValueError for anything that is not a number in ``[0, 100]`` (bools included).
    """
    if isinstance(rating, bool) or not isinstance(rating, int | float):
        raise ValueError(f"a rating must be a number in [0, 100], got {rating!r}")
    if not 0 <= rating <= 100:
        raise ValueError(f"a rating must be in [0, 100], got {rating!r}")
    return LEVELS[bisect_right(CUTS, rating)]


def clean(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space and strip."""
    return " ".join(text.split())


def widen(span: str, response: str) -> str:
    """The span grown to whole words when it occurs verbatim in ``response``.

    The annotation tool stored character selections, some of which start or end inside a word
    (``"s to return to, but he is afra"``); quoting half words would make the rationale harder
    to read. A span not found verbatim is returned unchanged.
    """
    start = response.find(span) if span else -1
    if start < 0:
        return span
    end = start + len(span)
    while start > 0 and response[start - 1].isalnum() and response[start].isalnum():
        start -= 1
    while end < len(response) and response[end].isalnum() and response[end - 1].isalnum():
        end += 1
    return response[start:end]


def shorten(text: str, limit: int = SPAN_LIMIT) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters plus ``" ..."``."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + " ..."


def rationale_for(annotations: Sequence[Mapping[str, Any]], response: str) -> str:
    """One reviewer's comments joined with the spans of ``response`` they point at.

    ``annotations`` is a review's list of ``{"selection": span, "annotation": [comments]}``.
    Returns one line per distinct comment, in the order the comments first occur:
    ``"<span>" -- <comment>``; spans that share a comment (the tool repeats a comment on every
    piece of a split selection) are joined on one line as ``"<span 1>" / "<span 2>" -- ...``,
    and a comment without a span is written as ``-- <comment>``. Spans are widened to whole
    words (:func:`widen`), whitespace-collapsed and shortened to :data:`SPAN_LIMIT` characters;
    several comments of one annotation are joined with a space. Highlights that carry no
    comment are left out (they say something is wrong but not what); a review with no comment
    at all gives ``""``.
    """
    groups: dict[str, list[str]] = {}
    for ann in annotations:
        comments = [clean(c) for c in ann.get("annotation") or [] if clean(c)]
        if not comments:
            continue
        comment = " ".join(comments)
        span = shorten(clean(widen(ann.get("selection") or "", response)))
        spans = groups.setdefault(comment, [])
        if span and span not in spans:
            spans.append(span)
    lines = []
    for comment, spans in groups.items():
        quoted = " / ".join(f'"{s}"' for s in spans)
        lines.append(f"{quoted} -- {comment}" if quoted else f"-- {comment}")
    return "\n".join(lines)


def choose_reference(judged_human: str, responses: Sequence[Mapping[str, Any]]
                     ) -> tuple[str, str]:
    """The reference answer of a question: ``(text, writer worker_id)``.

    ``responses`` are the question's human-written answers in the stories file's order; the
    first whose text differs from ``judged_human`` (the answer the ``human`` system was judged
    on; compared whitespace-insensitively) is the reference for all three systems of the
    question, so a system is never compared with itself and the three share one yardstick.
    Raises SourceError when no other answer exists.
    """
    judged = clean(judged_human)
    for resp in responses:
        if clean(resp["response_text"]) != judged:
            return resp["response_text"], str(resp["worker_id"])
    raise SourceError("no human answer other than the judged one to use as the reference")


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def _jsonl_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise SourceError(f"source file not found: {path}")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def convert(evals: list[dict[str, Any]], stories: list[dict[str, Any]]
            ) -> tuple[list[dict[str, Any]], dict[str, str], Counter[str]]:
    """Label rows, story texts by passage id, and source-only counts for the card.

    ``evals`` are the human-eval lines (one per story), ``stories`` the stories file's lines.
    """
    by_passage = {s["metadata"]["passage_id"]: s for s in stories}
    rows: list[dict[str, Any]] = []
    texts: dict[str, str] = {}
    notes: Counter[str] = Counter()
    for ev in sorted(evals, key=lambda e: int(e["passage-id"])):
        pid = ev["passage-id"]
        story = by_passage.get(pid)
        if story is None:
            raise SourceError(f"{EVAL_FILE}: passage {pid} is not in {STORIES_FILE}")
        texts[pid] = story["document"]
        notes["stories"] += 1
        for q_key in sorted(ev["questions"], key=int):
            question = story["questions"][int(q_key)]
            number = int(question["question_number"])
            if number != int(q_key) + 1:
                raise SourceError(f"passage {pid}: question {q_key} has number {number}")
            systems = ev["questions"][q_key]
            if set(systems) != set(SYSTEMS):
                raise SourceError(f"passage {pid} question {number}: systems {sorted(systems)}")
            judged_human = systems["human"]["response"]
            reference, writer = choose_reference(judged_human, question["responses"])
            human_writer = [str(r["worker_id"]) for r in question["responses"]
                            if r["response_text"] == judged_human]
            notes["questions"] += 1
            for system in SYSTEMS:
                entry = systems[system]
                response = entry["response"]
                item_id = f"sq-{pid}-q{number}-{system}"
                reviews = sorted(entry["reviews"], key=lambda r: int(r["worker_id"]))
                reviewers = {str(r["worker_id"]) for r in reviews}
                if len(reviewers) != len(reviews):
                    raise SourceError(f"{item_id}: a reviewer reviewed it twice")
                notes["reference written by a reviewer of the item"] += writer in reviewers
                if system == "human":
                    notes["human response reviewed by its writer"] += bool(
                        set(human_writer) & reviewers)
                for review in reviews:
                    notes["reviews"] += 1
                    _count_annotations(review["annotations"], response, notes)
                rationales = {r["worker_id"]: rationale_for(r["annotations"], response)
                              for r in reviews}
                for dim in DIMENSIONS:
                    for review in reviews:
                        rating = review[f"{dim}-rating"]
                        try:
                            level = to_level(rating)
                        except ValueError as exc:
                            raise SourceError(f"{item_id} worker {review['worker_id']} "
                                              f"{dim}-rating: {exc}") from None
                        rows.append({
                            "item_id": item_id,
                            "inputs": {"question": question["question_text"],
                                       "response": response, "reference": reference},
                            "dimension": dim,
                            "score": level,
                            "rationale": rationales[review["worker_id"]],
                            "rater": f"worker-{review['worker_id']}",
                            "system": system,
                            "passage_id": pid,
                            "question_number": number,
                            "rating": rating,
                        })
    return rows, texts, notes


def _count_annotations(annotations: Iterable[Mapping[str, Any]], response: str,
                       notes: Counter[str]) -> None:
    commented = 0
    for ann in annotations:
        notes["highlighted spans"] += 1
        comments = [c for c in ann.get("annotation") or [] if clean(c)]
        if not comments:
            notes["spans without a comment (left out)"] += 1
            continue
        commented += 1
        notes["comments"] += len(comments)
        span = ann.get("selection") or ""
        if not span.strip():
            notes["comments without a span"] += 1
            continue
        if span not in response:
            notes["spans not found verbatim in the response (quoted as stored)"] += 1
        elif widen(span, response) != span:
            notes["spans widened to whole words"] += 1
        if len(clean(widen(span, response))) > SPAN_LIMIT:
            notes[f"spans shortened to {SPAN_LIMIT} characters"] += 1
    if not commented:
        notes["reviews without any comment (empty rationale)"] += 1


# --------------------------------------------------------------------------------------------
# Statistics (printed and rendered into DATASET.md)
# --------------------------------------------------------------------------------------------


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _by_dimension(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{dimension: {item_id: {rater: row}}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in DIMENSIONS}
    for row in rows:
        out[row["dimension"]].setdefault(row["item_id"], {})[row["rater"]] = row
    return out


def level_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, Counter[int]]:
    """How many label rows of each dimension have each level."""
    out: dict[str, Counter[int]] = {d: Counter() for d in DIMENSIONS}
    for row in rows:
        out[row["dimension"]][row["score"]] += 1
    return out


def agreement(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per dimension, how the reviewers of an item agree after (and before) mapping.

    ``exact``/``within1``/``pair_mae``: over all pairs of reviewers of one item, share with the
    same level, share at most one level apart, mean absolute difference in levels;
    ``pair_mae_raw``: the same on the 0-100 ratings; ``loo_mae``/``loo_exact``: each reviewer
    against the lower median of the item's other reviewers (how the library aggregates
    raters), i.e. the human-vs-human ceiling a judge is compared with.
    """
    out = {}
    for dim, items in _by_dimension(rows).items():
        pairs, raw, loo = [], [], []
        for raters in items.values():
            reviews = [raters[k] for k in sorted(raters)]
            for a, b in combinations(reviews, 2):
                pairs.append(abs(a["score"] - b["score"]))
                raw.append(abs(a["rating"] - b["rating"]))
            for i, r in enumerate(reviews):
                others = [o["score"] for j, o in enumerate(reviews) if j != i]
                loo.append(abs(r["score"] - statistics.median_low(others)))
        out[dim] = {
            "exact": sum(d == 0 for d in pairs) / len(pairs),
            "within1": sum(d <= 1 for d in pairs) / len(pairs),
            "pair_mae": statistics.mean(pairs),
            "pair_mae_raw": statistics.mean(raw),
            "loo_mae": statistics.mean(loo),
            "loo_exact": sum(d == 0 for d in loo) / len(loo),
        }
    return out


def _quantiles(values: Sequence[float], points: Sequence[int]) -> list[float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return [cuts[p - 1] for p in points]


def _tokens(text: str) -> int:
    # judgealign.items.estimate_tokens: 3.5 characters a token (the builder imports nothing
    # of the package, so that it runs without an install)
    return -(-2 * len(text) // 7)


def _fmt(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def label_statistics(rows: list[dict[str, Any]]) -> str:
    """The card's tables computed from the label rows alone: ratings, levels, agreement.

    Tests recompute this from the bundled ``labels.jsonl`` and find it in ``DATASET.md``.
    """
    lines = [
        "### Ratings (0-100) before mapping",
        "",
        "| dimension | mean | min | 10% | 25% | 50% | 75% | 90% | max | = 0 | = 100 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    raw = {d: [r["rating"] for r in rows if r["dimension"] == d] for d in DIMENSIONS}
    for d in DIMENSIONS:
        v = raw[d]
        qs = _quantiles(v, (10, 25, 50, 75, 90))
        lines.append(f"| {d} | {statistics.mean(v):.1f} | {_fmt(min(v))} | "
                     + " | ".join(_fmt(x) for x in qs)
                     + f" | {_fmt(max(v))} | {v.count(0)} | {v.count(100)} |")
    lines += ["", "Histogram of the ratings (10-point bins; the last holds 90-100):", "",
              "| dimension | " + " | ".join(f"{10 * i}-" for i in range(10)) + " |",
              "| --- |" + " ---: |" * 10]
    for d in DIMENSIONS:
        hist = Counter(min(int(x // 10), 9) for x in raw[d])
        lines.append(f"| {d} | " + " | ".join(str(hist[i]) for i in range(10)) + " |")
    lines += ["", "Mean rating by system:", "", "| system | " + " | ".join(DIMENSIONS) + " |",
              "| --- |" + " ---: |" * len(DIMENSIONS)]
    for s in SYSTEMS:
        means = [statistics.mean(r["rating"] for r in rows
                                 if r["dimension"] == d and r["system"] == s) for d in DIMENSIONS]
        lines.append(f"| {s} | " + " | ".join(f"{m:.1f}" for m in means) + " |")

    counts = level_counts(rows)
    bounds = [0, *CUTS, 101]
    head = [f"{lv} ({bounds[i]}-{bounds[i + 1] - 1})" for i, lv in enumerate(LEVELS)]
    lines += ["", "### Levels after mapping", "",
              "Label rows (one per reviewer) per level, with the share of the dimension's rows:",
              "", "| dimension | " + " | ".join(head) + " |",
              "| --- |" + " ---: |" * len(LEVELS)]
    for d in DIMENSIONS:
        total = sum(counts[d].values())
        lines.append(f"| {d} | " + " | ".join(
            f"{counts[d][lv]} ({_pct(counts[d][lv], total)})" for lv in LEVELS) + " |")
    lines += ["", "Items per level of the reviewers' lower median (the library's aggregate), "
              "and by system:", "",
              "| dimension | system | " + " | ".join(str(lv) for lv in LEVELS) + " | mean |",
              "| --- | --- |" + " ---: |" * (len(LEVELS) + 1)]
    for d, by_item in _by_dimension(rows).items():
        for s in (*SYSTEMS, "all"):
            agg = [statistics.median_low([x["score"] for x in raters_.values()])
                   for raters_ in by_item.values()
                   if s == "all" or next(iter(raters_.values()))["system"] == s]
            c = Counter(agg)
            lines.append(f"| {d} | {s} | " + " | ".join(str(c[lv]) for lv in LEVELS)
                         + f" | {statistics.mean(agg):.2f} |")

    lines += ["", "Quantile bins, for comparison: the quartiles of the ratings, i.e. the cut "
              "points that would give four equally filled levels:", "",
              "| dimension | 25% | 50% | 75% |", "| --- | ---: | ---: | ---: |"]
    for d in DIMENSIONS:
        lines.append(f"| {d} | " + " | ".join(_fmt(x) for x in _quantiles(raw[d], (25, 50, 75)))
                     + " |")

    agree = agreement(rows)
    lines += ["", "### Agreement between reviewers", "",
              "| dimension | pairs: same level | pairs: within 1 level | pairs: mean abs. "
              "difference (levels) | pairs: mean abs. difference (0-100) | each reviewer vs "
              "lower median of the other two: MAE | same level |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    # the human answers sit at the top for every reviewer; among the model answers alone the
    # reviewers agree less, which is the ceiling that matters for telling model answers apart
    models = agreement([r for r in rows if r["system"] != "human"])
    for label, table in (("", agree), (" (bart, bart-dpr only)", models)):
        for d in DIMENSIONS:
            a = table[d]
            lines.append(f"| {d}{label} | {a['exact']:.1%} | {a['within1']:.1%} | "
                         f"{a['pair_mae']:.2f} | {a['pair_mae_raw']:.1f} | {a['loo_mae']:.2f} | "
                         f"{a['loo_exact']:.1%} |")

    return "\n".join(lines)


def render_stats(rows: list[dict[str, Any]], stories: Mapping[str, str],
                 notes: Mapping[str, int]) -> str:
    """The card's statistics block (markdown), from the label rows and the conversion notes."""
    items = {r["item_id"]: r for r in rows}
    raters = Counter(r["rater"] for r in rows if r["dimension"] == DIMENSIONS[0])
    per_item = Counter(len(v) for d in _by_dimension(rows).values() for v in d.values())
    systems = Counter(r["system"] for r in items.values())
    by_system = ", ".join(f"{systems[s]} {s}" for s in SYSTEMS)
    reviewers = ", ".join(f"{n} reviewers: {c}" for n, c in sorted(per_item.items()))
    lines = [
        "### Counts",
        "",
        f"- {notes['stories']} stories, {notes['questions']} questions, {len(items)} items "
        f"({by_system}), {notes['reviews']} reviews, {len(rows)} label rows "
        f"({len(DIMENSIONS)} dimensions x reviews).",
        f"- (item, dimension) pairs by number of reviewers: {reviewers}.",
        f"- {len(raters)} reviewers, identified across items by `worker_id`: "
        + ", ".join(f"`{k}` {v} reviews" for k, v in sorted(raters.items())) + ".",
        f"- The reference chosen for an item was written by one of its own reviewers for "
        f"{notes['reference written by a reviewer of the item']} of {len(items)} items; no "
        f"`human` response was reviewed by its writer "
        f"({notes['human response reviewed by its writer']} cases).",
        "",
        label_statistics(rows),
    ]
    by_review = {(r["item_id"], r["rater"]): r["rationale"] for r in rows}
    lengths = sorted(len(t) for t in by_review.values() if t)
    with_rationale = sum(bool(r["rationale"]) for r in rows)
    n_lines = sum(t.count("\n") + 1 for t in by_review.values() if t)
    lines += ["", "### Rationales", "",
              f"- Reviews with a non-empty rationale: {len(lengths)} of {len(by_review)} "
              f"({_pct(len(lengths), len(by_review))}); empty: {len(by_review) - len(lengths)} "
              f"(label rows with a rationale: "
              f"{with_rationale} of {len(rows)}).",
              f"- Rationale length (characters, non-empty ones): median "
              f"{statistics.median(lengths):.0f}, 90% {_quantiles(lengths, (90,))[0]:.0f}, "
              f"max {max(lengths)}; lines (one per distinct comment): "
              f"{n_lines}."]
    for key in ("highlighted spans", "comments", "spans without a comment (left out)",
                "reviews without any comment (empty rationale)", "comments without a span",
                "spans widened to whole words", f"spans shortened to {SPAN_LIMIT} characters",
                "spans not found verbatim in the response (quoted as stored)"):
        lines.append(f"- {key[0].upper() + key[1:]}: {notes.get(key, 0)}.")

    fields = {name: [items[i]["inputs"][name] for i in sorted(items)]
              for name in ("question", "response", "reference")}
    prompt = [sum(_tokens(items[i]["inputs"][n]) for n in fields) for i in sorted(items)]
    lines += ["", "### Lengths", "",
              "Estimated tokens (3.5 characters a token, as `judgealign.items.estimate_tokens`):",
              "", "| text | median | 90% | max |", "| --- | ---: | ---: | ---: |"]
    for name, texts in (*fields.items(), ("question + response + reference", None)):
        v = [_tokens(t) for t in texts] if texts is not None else prompt
        lines.append(f"| {name} | {statistics.median(v):.0f} | "
                     f"{_quantiles(v, (90,))[0]:.0f} | {max(v)} |")
    words = sorted(len(t.split()) for t in stories.values())
    toks = sorted(_tokens(t) for t in stories.values())
    size = sum(len(t.encode("utf-8")) for t in stories.values())
    lines.append(f"| story ({len(stories)} files) | {statistics.median(toks):.0f} | "
                 f"{_quantiles(toks, (90,))[0]:.0f} | {max(toks)} |")
    lines += ["", f"Stories: {min(words):,} to {max(words):,} words (median "
              f"{statistics.median(words):,.0f}), {size:,} bytes in all."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def fill_card(card: str, stats: str) -> str:
    """``card`` with the text between the stats markers replaced by ``stats``."""
    pattern = re.compile(re.escape(STATS_BEGIN) + r".*?" + re.escape(STATS_END), re.S)
    if not pattern.search(card):
        raise SourceError(f"DATASET.md has no {STATS_BEGIN} ... {STATS_END} block")
    return pattern.sub(lambda _: f"{STATS_BEGIN}\n{stats}\n{STATS_END}", card, count=1)


def build(source: Path, out: Path) -> tuple[dict[str, str], str]:
    """Every file of ``out`` (relative name -> text) and the statistics block."""
    evals = _jsonl_records(source / EVAL_FILE)
    stories = _jsonl_records(source / STORIES_FILE)
    rows, texts, notes = convert(evals, stories)
    stats = render_stats(rows, texts, notes)
    files = {"labels.jsonl": jsonl(rows)}
    for pid, text in texts.items():
        files[f"stories/{pid}.txt"] = text
    for name in LICENCE_FILES:
        path = source / name
        if not path.is_file():
            raise SourceError(f"licence file not found: {path}")
        files[name] = path.read_text(encoding="utf-8")
    card = out / "DATASET.md"
    if not card.is_file():
        raise SourceError(f"{card} is missing: it is hand-written, only its stats are built")
    files["DATASET.md"] = fill_card(card.read_text(encoding="utf-8"), stats)
    return files, stats


def _on_disk(path: Path) -> str | None:
    """The file's text as written (no newline translation), or None when it is missing."""
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as fh:
        return fh.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True,
                        help=f"folder with {EVAL_FILE}, {STORIES_FILE} and the licences")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true",
                        help="compare with the files on disk instead of writing")
    args = parser.parse_args(argv)
    try:
        files, stats = build(args.source, args.out)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        # newline="" : compare the bytes written, not a newline-translated reading
        stale = [name for name, text in files.items() if _on_disk(args.out / name) != text]
        extra = sorted(f"stories/{p.name}" for p in (args.out / "stories").glob("*")
                       if f"stories/{p.name}" not in files)
        if stale or extra:
            print("out of date:", ", ".join(stale + extra))
            return 1
        print(f"{len(files)} files up to date")
        return 0
    print(stats)
    (args.out / "stories").mkdir(parents=True, exist_ok=True)
    for old in (args.out / "stories").glob("*.txt"):
        if f"stories/{old.name}" not in files:
            old.unlink()
    for name, text in files.items():
        with (args.out / name).open("w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
