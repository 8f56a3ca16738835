"""Quality scorers: one method per prompt for every teacher, stable keys, missing responses."""

from __future__ import annotations

import numpy as np
import pytest

from persyn.scoring.answers import AnswerScorer, answers_key
from persyn.scoring.quality import (
    AutoScorer,
    EngineScorer,
    build_quality_scorer,
    score_quality_matrix,
)


class RecordingScoreEngine:
    """An Engine whose `score` is a deterministic function of the response (its length), recording
    every call so the test can see which method scored which (prompt, response)."""

    fingerprint = "recording-engine@1"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def score(self, prompts, responses):
        self.calls += list(zip(prompts, responses, strict=True))
        return [float(len(r)) for r in responses]

    def generate(self, prompts, params):  # pragma: no cover - not used
        raise NotImplementedError

    def loglik(self, prompts, responses):  # pragma: no cover - not used
        raise NotImplementedError

    def close(self) -> None:
        pass


def test_keys_are_stable_and_name_the_method():
    eng = RecordingScoreEngine()
    assert EngineScorer(eng, "judge").key == "judge:recording-engine@1"
    assert EngineScorer(eng, "reward").key == "reward:recording-engine@1"
    auto = AutoScorer(EngineScorer(eng, "judge"))
    assert auto.key == f"auto({answers_key('auto')}|judge:recording-engine@1)"
    assert build_quality_scorer("auto", eng).key == auto.key
    assert build_quality_scorer("answers").key == AnswerScorer().key
    assert (
        build_quality_scorer("answers", checker="numeric").key == answers_key("numeric") != auto.answers.key
    )
    with pytest.raises(ValueError, match="needs an engine"):
        build_quality_scorer("judge")
    with pytest.raises(ValueError, match="unknown"):
        build_quality_scorer("vibes")  # type: ignore[arg-type]


def test_auto_scores_each_prompt_with_one_method_for_all_teachers():
    eng = RecordingScoreEngine()
    auto = build_quality_scorer("auto", eng)
    prompts = ["What is 2+2?", "Write a haiku about rain.", "What is 10*10?"]
    refs = ["4", None, "100"]
    responses = {
        "a": ["The answer is 4.", "Rain falls softly", "#### 1000"],
        "b": ["5", "Drops", None],  # b failed on the third prompt
        "c": ["\\boxed{4}", None, "It is 100."],
    }
    q, methods = score_quality_matrix(auto, prompts, responses, refs)
    assert methods == [answers_key("auto"), "judge:recording-engine@1", answers_key("auto")]
    expected = np.array(
        [
            [1.0, 0.0, 1.0],  # answers: 0/1 for every teacher
            [len("Rain falls softly"), len("Drops"), np.nan],  # judge for every teacher, c missing
            [0.0, np.nan, 1.0],  # b missing: NaN, not 0
        ]
    )
    np.testing.assert_array_equal(q, expected)
    # The judge saw exactly the responses to the prompt without a reference, nothing else.
    assert eng.calls == [(prompts[1], "Rain falls softly"), (prompts[1], "Drops")]


def test_judge_only_scores_everything_with_the_engine():
    eng = RecordingScoreEngine()
    q, methods = score_quality_matrix(
        EngineScorer(eng, "judge"), ["p1", "p2"], {"a": ["xx", "yyy"], "b": ["z", None]}, ["4", None]
    )
    np.testing.assert_array_equal(q, [[2.0, 1.0], [3.0, np.nan]])
    assert set(methods) == {"judge:recording-engine@1"}


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="teacher 'b' has 1 responses for 2 prompts"):
        score_quality_matrix(AnswerScorer(), ["p1", "p2"], {"a": ["1", "2"], "b": ["1"]}, ["1", "2"])
    with pytest.raises(ValueError, match="references"):
        score_quality_matrix(AnswerScorer(), ["p1", "p2"], {"a": ["1", "2"]}, ["1"])


def test_engine_returning_wrong_count_is_an_error():
    class Broken(RecordingScoreEngine):
        def score(self, prompts, responses):
            return [0.0]

    with pytest.raises(RuntimeError, match="returned 1 scores for 2"):
        EngineScorer(Broken(), "reward").score(["a", "b"], ["x", "y"])


def test_context_overflow_makes_a_score_missing_not_a_crash():
    from persyn.engines.base import ContextLengthError
    from persyn.scoring.learnability import Learnability, learnability_matrix

    class SmallContext(RecordingScoreEngine):
        """Refuses responses over 10 characters, naming them, as engines do."""

        fingerprint = "small-context@1"

        def _check(self, responses):
            bad = [i for i, r in enumerate(responses) if len(r) > 10]
            if bad:
                exc = ContextLengthError(f"{len(bad)} inputs too long")
                exc.indices = bad  # engines name the offending inputs
                raise exc

        def score(self, prompts, responses):
            self._check(responses)
            return super().score(prompts, responses)

        def loglik(self, prompts, responses):
            self._check(responses)
            return [-float(len(r)) for r in responses]

    eng = SmallContext()
    vals = EngineScorer(eng).score(["p"] * 3, ["short", "much too long to fit", "tiny"])
    assert vals[0] == 5.0 and np.isnan(vals[1]) and vals[2] == 4.0
    assert Learnability(eng).key == "loglik:small-context@1"
    m = learnability_matrix(eng, ["p1", "p2", "p3"], {"a": ["ok", "x" * 50, ""], "b": [None, "fine", "yes"]})
    # overflow, a failed teacher (None) and an empty response are all missing, never 0
    np.testing.assert_array_equal(m, [[-2.0, np.nan], [np.nan, -4.0], [np.nan, -3.0]])

    class Unnamed(RecordingScoreEngine):
        def score(self, prompts, responses):
            raise ContextLengthError("too long")  # no indices: nothing to drop, so it must raise

    with pytest.raises(ContextLengthError):
        EngineScorer(Unnamed()).score(["p"], ["r"])


def test_a_reference_guided_judge_reads_the_reference_under_the_question():
    from persyn.scoring.quality import with_reference

    eng = RecordingScoreEngine()
    plain, guided = EngineScorer(eng, "judge"), EngineScorer(eng, "judge", reference=True)
    assert guided.key == "judge+reference:recording-engine@1" != plain.key
    guided.score(["What is 2+2?", "Write a haiku."], ["4", "..."], ["4", None])
    assert eng.calls == [(with_reference("What is 2+2?", "4"), "4"), ("Write a haiku.", "...")]
    assert "Reference answer (known to be correct):\n4" in eng.calls[0][0]
    assert build_quality_scorer("judge", eng, judge_reference=True).key == guided.key
    assert build_quality_scorer("judge", eng).key == plain.key
    with pytest.raises(ValueError, match="only a judge"):
        EngineScorer(eng, "reward", reference=True)
