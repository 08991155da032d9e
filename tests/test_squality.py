"""The bundled SQuALITY human-feedback set: loader, counts, references, scale, card, builder.

Offline and fast. Never reads the builder's source folder: the builder's pure functions
are exercised on data made here, and the bundled files are checked against each other.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
import types
import zipfile
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import pytest

from judgealign.datasets import load_squality
from judgealign.labels import LabelSet
from judgealign.signatures.rubric import load_builtin

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "datasets" / "squality"
BUILD = ROOT / "datasets" / "squality_build" / "build.py"
ITEM_ID = re.compile(r"sq-(\d+)-q([1-5])-(bart|bart-dpr|human)")
# one rationale line: quoted spans (optional) then " -- " and the comment
RATIONALE_LINE = re.compile(r'(?:"[^\n]*" )?-- \S[^\n]*')


@cache
def builder() -> types.ModuleType:
    """The build script as a module (exec'd from source: no bytecode left next to it)."""
    module = types.ModuleType("squality_build")
    module.__file__ = str(BUILD)
    sys.modules[module.__name__] = module
    try:
        exec(compile(BUILD.read_text(encoding="utf-8"), str(BUILD), "exec"), module.__dict__)
    finally:
        sys.modules.pop(module.__name__, None)
    return module


@cache
def rows() -> list[dict]:
    return [json.loads(line) for line in
            (DATA / "labels.jsonl").read_text(encoding="utf-8").splitlines() if line]


@cache
def dataset():
    return load_squality()


# ---- the loader and the label set ------------------------------------------------------------


def test_loader_validates_against_the_rubric() -> None:
    data = dataset()
    assert data.name == "squality"
    assert data.rubric.name == "squality"
    assert data.rubric.scale == [1, 2, 3, 4]
    assert data.rubric.dimension_ids == ["correctness", "selection", "overall"]
    assert isinstance(data.labels, LabelSet)
    # the loader validated the rows; validating again finds nothing either
    data.labels.validate(data.rubric, strict=True)
    assert len(data.labels) == 2700
    assert len(data.items) == 300
    assert data.labels.dimensions == ["correctness", "overall", "selection"]
    assert data.card.is_file()
    for inputs in data.items.values():
        assert set(inputs) == {"question", "response", "reference"}
        assert all(text.strip() for text in inputs.values())


def test_items_raters_and_ids() -> None:
    data = dataset()
    per_story: dict[str, set[str]] = defaultdict(set)
    for item_id in data.items:
        match = ITEM_ID.fullmatch(item_id)
        assert match, item_id
        per_story[match.group(1)].add(item_id)
    # 20 stories x 5 questions x 3 systems
    assert len(per_story) == 20
    assert all(len(ids) == 15 for ids in per_story.values())
    raters: dict[tuple[str, str], list[str]] = defaultdict(list)
    for lab in data.labels:
        assert lab.rater is not None and re.fullmatch(r"worker-\d+", lab.rater)
        raters[(lab.item_id, lab.dimension)].append(lab.rater)
    assert len(raters) == 300 * 3
    for key, names in raters.items():
        assert len(names) == len(set(names)) == 3, key
    # one reviewer reviews an item once: the same three reviewers on all its dimensions
    by_item = defaultdict(set)
    for (item_id, _), names in raters.items():
        by_item[item_id].add(tuple(sorted(names)))
    assert all(len(v) == 1 for v in by_item.values())
    # the three reviewers of an item give it several different scores somewhere
    assert any(len({lab.score for lab in data.labels
                    if (lab.item_id, lab.dimension) == key}) > 1 for key in raters)


def test_episodes_aggregate_three_reviewers() -> None:
    data = dataset()
    episodes = data.labels.episodes("overall")
    assert len(episodes) == 300
    scores = {lab.item_id: [] for lab in data.labels}
    for lab in data.labels:
        if lab.dimension == "overall":
            scores[lab.item_id].append(lab.score)
    for ep in episodes:
        assert ep.score == sorted(scores[ep.item_id])[1]  # lower median of three


def test_folds_can_keep_each_story_together_by_id() -> None:
    """The story is no input of the default labels; ``group_by="id:^sq-(\\d+)-"`` keeps all
    15 answers about one story in one fold (20 stories, 20 units)."""
    from judgealign.evaluation.folds import assign_folds, content_groups

    labels = dataset().labels
    units = content_groups(labels.item_ids, labels, group_by=r"id:^sq-(\d+)-")
    assert len(units) == 20 and all(len(m) == 15 for m in units.values())
    folds = assign_folds(labels.item_ids, 4, 0, labels=labels, group_by=r"id:^sq-(\d+)-")
    for members in units.values():
        assert len({folds[i] for i in members}) == 1


def test_reference_is_never_the_judged_response() -> None:
    references: dict[tuple[str, str], set[str]] = defaultdict(set)
    for item_id, inputs in dataset().items.items():
        assert " ".join(inputs["reference"].split()) != " ".join(inputs["response"].split()), \
            item_id
        passage, question, _ = ITEM_ID.fullmatch(item_id).groups()
        references[(passage, question)].add(inputs["reference"])
    # one reference per question, shared by its three systems
    assert len(references) == 100
    assert all(len(refs) == 1 for refs in references.values())
    # and it is never any system's response to that question
    for item_id, inputs in dataset().items.items():
        passage, question, _ = ITEM_ID.fullmatch(item_id).groups()
        others = [dataset().items[f"sq-{passage}-q{question}-{s}"]["response"]
                  for s in ("bart", "bart-dpr", "human")]
        assert inputs["reference"] not in others


def test_scores_are_on_the_scale_and_follow_the_ratings() -> None:
    to_level = builder().to_level
    scale = load_builtin("squality").scale
    for row in rows():
        assert row["score"] in scale, row["item_id"]
        assert 0 <= row["rating"] <= 100
        assert row["score"] == to_level(row["rating"]), (row["item_id"], row["rating"])
    counts = Counter((row["dimension"], row["score"]) for row in rows())
    for dim in ("correctness", "selection", "overall"):
        shares = [counts[(dim, lv)] / 900 for lv in scale]
        assert min(shares) >= 0.10, (dim, shares)  # every level is really used


def test_rationales() -> None:
    labels = dataset().labels
    with_text = [lab for lab in labels if lab.rationale.strip()]
    assert len(with_text) > len(labels) / 2
    for lab in with_text:
        for line in lab.rationale.splitlines():
            assert RATIONALE_LINE.fullmatch(line), (lab.item_id, lab.rater, line)
    # comments are not tied to a dimension: one review, one rationale on all three
    by_review: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    for lab in labels:
        by_review[(lab.item_id, lab.rater)].add(lab.rationale)
    assert len(by_review) == 900
    assert all(len(texts) == 1 for texts in by_review.values())
    # quoted spans come from the judged response (the few the tool stored differently aside)
    items = dataset().items
    quoted = found = 0
    for (item_id, _), (text,) in by_review.items():
        for span in re.findall(r'"([^"\n]{3,})"(?: /| --)', text):
            quoted += 1
            found += span.removesuffix(" ...") in " ".join(items[item_id]["response"].split())
    assert quoted > 500 and found / quoted > 0.9


def test_stories_are_offered_as_an_optional_input() -> None:
    passages = {row["passage_id"] for row in rows()}
    files = {p.stem for p in (DATA / "stories").glob("*.txt")}
    assert files == passages and len(files) == 20
    rubric = load_builtin("squality")
    story = next(i for i in rubric.inputs if i.name == "story")
    assert not story.required
    assert [i.name for i in rubric.inputs if i.required] == ["question", "response", "reference"]
    with_story = load_squality(with_story=True)
    assert len(with_story.labels) == 2700
    for item_id, inputs in with_story.items.items():
        passage = ITEM_ID.fullmatch(item_id).group(1)
        assert inputs["story"] == (DATA / "stories" / f"{passage}.txt").read_text(
            encoding="utf-8")
        assert len(inputs["story"].split()) > 3000
        assert {k: v for k, v in inputs.items() if k != "story"} == dataset().items[item_id]


def test_a_judge_reads_question_response_and_reference() -> None:
    from judgealign.program import RubricJudge
    from judgealign.testing import dimension_of, scripted_lm

    prompts: list[str] = []
    levels = {"Correctness": "2", "Selection (coverage)": "1", "Overall": "4"}

    def respond(prompt: str) -> str:
        prompts.append(prompt)
        return json.dumps({"score": levels[dimension_of(prompt)], "rationale": "as scripted"})

    data = dataset()
    item = data.items["sq-50827-q1-bart-dpr"]
    result = RubricJudge(data.rubric, lm=scripted_lm(respond))(**item)
    assert {d: r.score for d, r in result.dimensions.items()} == {
        "correctness": 2, "selection": 1, "overall": 4}
    assert len(prompts) == 3
    for prompt in prompts:
        for text in item.values():
            assert text.strip()[:200] in prompt
        assert "Score levels:" in prompt and "- 4: " in prompt


# ---- the builder's pure functions ----------------------------------------------------------


@pytest.mark.parametrize("rating,level", [
    (0, 1), (19, 1), (19.99, 1), (20, 2), (35, 2), (49, 2), (49.5, 2), (50, 3), (89, 3),
    (89.9, 3), (90, 4), (99, 4), (100, 4),
])
def test_to_level_boundaries(rating: float, level: int) -> None:
    assert builder().to_level(rating) == level


@pytest.mark.parametrize("bad", [-1, -0.1, 100.5, 101, True, "50", None])
def test_to_level_rejects_what_is_not_a_rating(bad: object) -> None:
    with pytest.raises(ValueError):
        builder().to_level(bad)


def test_rationale_joins_comments_with_their_spans() -> None:
    b = builder()
    response = "Noork meets Sarna in the jungle. He travels to the Temple of the Skull alone."
    annotations = [
        {"selection": "meets Sarna", "annotation": ["She is\n  called Tholon Sarna"]},
        {"selection": "ravels to the Tem", "annotation": []},           # no comment: left out
        {"selection": "the Temple", "annotation": ["Not alone ", "Ud goes too"]},
        {"selection": " alone.", "annotation": ["Not alone ", "Ud goes too"]},  # same comment
        {"selection": "", "annotation": ["Nicely written"]},
        {"selection": "meets Sarna", "annotation": ["She is called Tholon Sarna"]},  # repeat
    ]
    assert b.rationale_for(annotations, response).splitlines() == [
        '"meets Sarna" -- She is called Tholon Sarna',
        '"the Temple" / "alone." -- Not alone Ud goes too',
        "-- Nicely written",
    ]
    assert b.rationale_for([{"selection": "He", "annotation": [" "]}], response) == ""
    assert b.rationale_for([], response) == ""


def test_rationale_widens_cut_words_and_shortens_long_spans() -> None:
    b = builder()
    response = "Danny sets the table for his brother Kevin, who is upset."
    text = b.rationale_for([{"selection": "anny sets the tab", "annotation": ["Kevin does"]}],
                           response)
    assert text == '"Danny sets the table" -- Kevin does'
    # not found verbatim: quoted as stored
    assert b.widen("Dany", response) == "Dany"
    long_span = " ".join(["word"] * 100)
    short = b.shorten(long_span)
    assert short.endswith(" ...") and len(short) <= b.SPAN_LIMIT + 4
    assert long_span.startswith(short.removesuffix(" ..."))
    assert b.shorten("short span") == "short span"


def test_choose_reference_skips_the_judged_answer() -> None:
    b = builder()
    answers = [{"worker_id": "7", "response_text": "The plot  is\nthis."},
               {"worker_id": "9", "response_text": "Another answer."},
               {"worker_id": "2", "response_text": "A third answer."}]
    assert b.choose_reference("Another answer.", answers) == ("The plot  is\nthis.", "7")
    # whitespace does not make the judged answer a different text
    assert b.choose_reference("The plot is this.", answers) == ("Another answer.", "9")
    with pytest.raises(b.SourceError):
        b.choose_reference("Only one.", [{"worker_id": "1", "response_text": "Only one."}])


def test_card_statistics_match_the_labels() -> None:
    card = (DATA / "DATASET.md").read_text(encoding="utf-8")
    assert builder().label_statistics(rows()) in card
    # the stats block is filled, between its markers
    block = card.split(builder().STATS_BEGIN, 1)[1].split(builder().STATS_END, 1)[0]
    assert "### Agreement between reviewers" in block and "### Rationales" in block


# ---- card, licences, packaging -------------------------------------------------------------


def test_card_and_licences() -> None:
    card = " ".join((DATA / "DATASET.md").read_text(encoding="utf-8").split())
    for needed in ("nyu-mll/SQuALITY", "dc08d4f", "CC BY 4.0", "Project Gutenberg",
                   "Wang", "too long for the embedded", "not tied to one dimension"):
        assert needed in card, needed
    assert "Attribution 4.0 International" in (DATA / "LICENSE").read_text(encoding="utf-8")
    assert "Project Gutenberg" in (DATA / "GUTENBERG_LICENSE").read_text(encoding="utf-8")


def test_package_data_covers_every_bundled_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["judgealign.datasets"]
    for path in DATA.rglob("*"):
        if path.is_file():
            name = str(path.relative_to(DATA.parent))
            assert any(fnmatch.fnmatch(name, p) for p in patterns), name
    size = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert size < 10_000_000


def test_loads_from_a_built_wheel(tmp_path: Path) -> None:
    out = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (wheel,) = out.glob("judgealign-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("judgealign/signatures/squality.toml",
                     "judgealign/datasets/squality/labels.jsonl",
                     "judgealign/datasets/squality/DATASET.md",
                     "judgealign/datasets/squality/LICENSE",
                     "judgealign/datasets/squality/GUTENBERG_LICENSE",
                     "judgealign/datasets/squality/stories/50827.txt"):
        assert required in names, required
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import judgealign, judgealign.datasets as d;"
            f"assert judgealign.__file__.startswith({str(site)!r}), judgealign.__file__;"
            "a = d.load_squality(); b = d.load_squality(with_story=True);"
            "print(len(a.labels), len(a.items), a.rubric.scale, "
            "min(len(x['story']) for x in b.items.values()))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["2700", "300", "[1,", "2,", "3,", "4]",
                                  run.stdout.split()[-1]]
    assert int(run.stdout.split()[-1]) > 10_000
