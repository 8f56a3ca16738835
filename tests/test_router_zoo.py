"""Scoring and routing with real zoo models: learnability, and the whole
calibrate -> score -> label -> pairs -> router -> save/reload chain on a few dozen prompts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from persyn.engines.base import GenerationParams
from persyn.router.encoders import load_encoder
from persyn.router.io import load_router, save_router
from persyn.router.model import TrainConfig, train_router
from persyn.scoring.answers import answers_key
from persyn.scoring.labels import combine_labels, make_pairs
from persyn.scoring.learnability import Learnability, learnability_matrix
from persyn.scoring.quality import build_quality_scorer, score_quality_matrix

pytestmark = [pytest.mark.zoo, pytest.mark.slow]
# The transformers engine is the only local back end these tests can use.
pytest.importorskip("persyn.engines.transformers_engine")

GREEDY = GenerationParams(max_new_tokens=48, temperature=0.0)

# Used when the bundled demo prompts are not there: math with reference answers (scored by answer
# matching) and open instructions (scored by the judge), so `auto` exercises both methods.
FALLBACK_PROMPTS: list[tuple[str, str | None]] = [
    ("What is 12 + 7? Answer with the number only.", "19"),
    ("What is 9 times 8? Answer with the number only.", "72"),
    ("What is 100 minus 37? Answer with the number only.", "63"),
    ("How many days are in a week? Answer with the number only.", "7"),
    ("What is half of 50? Answer with the number only.", "25"),
    ("What is 15 divided by 3? Answer with the number only.", "5"),
    ("How many legs does a spider have? Answer with the number only.", "8"),
    ("What is 2 to the power of 5? Answer with the number only.", "32"),
    ("What is 3 squared plus 1? Answer with the number only.", "10"),
    ("How many minutes are in two hours? Answer with the number only.", "120"),
    ("Write a Python function that returns the square of a number.", None),
    ("How do I reverse a list in Python?", None),
    ("Write a SQL query that counts the rows of a table named users.", None),
    ("Explain what a hash map is in one sentence.", None),
    ("Give one tip for writing readable code.", None),
    ("What does the HTTP status code 404 mean?", None),
    ("Name three primary colours.", None),
    ("Why is the sky blue? Answer briefly.", None),
    ("Suggest a name for a pet goldfish.", None),
    ("Give a synonym for the word happy.", None),
    ("What is the capital of France?", None),
    ("Describe a cat in one sentence.", None),
    ("Translate 'good morning' into Spanish.", None),
    ("Write a haiku about the sea.", None),
]


def _demo_prompts(limit: int = 24) -> list[tuple[str, str | None]]:
    """Half generated math problems (with answers), half hand-written instructions, from the
    bundled demo set (persyn.demo) when it is there, else the list above."""
    try:
        from persyn.demo import demo_prompts
    except ImportError:
        return FALLBACK_PROMPTS[:limit]
    rows = demo_prompts(n_math=limit // 2, n_instructions=limit - limit // 2, seed=0)
    return [(r["prompt"], r["answer"]) for r in rows]


def _shuffle_words(text: str, seed: int) -> str:
    words = text.split()
    rng = random.Random(seed)
    for _ in range(10):  # a shuffle that happens to equal the original would not test anything
        rng.shuffle(words)
        if " ".join(words) != " ".join(text.split()):
            break
    return " ".join(words)


def _engine(request, fixture: str, model: str):
    """The session engine fixture of tests/conftest.py, or (run on its own) a fresh engine."""
    try:
        return request.getfixturevalue(fixture)
    except pytest.FixtureLookupError:
        from persyn.engines import EngineSpec, load_engine

        engine = load_engine(EngineSpec(model=model))
        request.addfinalizer(engine.close)
        return engine


@pytest.fixture(scope="module")
def student(request):
    return _engine(request, "smollm_engine", "zoo:smollm2-135m-instruct")


@pytest.fixture(scope="module")
def qwen(request):
    return _engine(request, "qwen_engine", "zoo:qwen2.5-coder-0.5b-instruct")


@pytest.fixture(scope="module")
def gemma(request):
    return _engine(request, "gemma_engine", "zoo:gemma3-270m")


def test_learnability_prefers_the_students_own_answer_to_shuffled_words(student):
    prompts = [
        "Explain why the sky is blue in two sentences.",
        "Give three tips for staying focused while studying.",
        "What is a prime number?",
        "Describe how to make a cup of tea.",
    ]
    answers = [g.text for g in student.generate(prompts, GREEDY)]
    assert all(len(a.split()) >= 5 for a in answers), answers
    shuffled = [_shuffle_words(a, i) for i, a in enumerate(answers)]
    learn = Learnability(student)
    own = np.array(learn.score(prompts, answers))
    mixed = np.array(learn.score(prompts, shuffled))
    assert (own > mixed).all(), (own, mixed)
    assert (own - mixed).mean() > 1.0  # nats per token: a large gap, not noise
    assert learn.key == f"loglik:{student.fingerprint}"


def test_end_to_end_calibrate_score_route_reload(student, qwen, gemma, tmp_path):
    data = _demo_prompts(24)
    prompts = [p for p, _ in data]
    refs = [a for _, a in data]
    teachers = {"smollm": student, "qwen": qwen, "gemma": gemma}
    responses = {name: [g.text for g in eng.generate(prompts, GREEDY)] for name, eng in teachers.items()}
    # An empty generation is a failed one: that teacher is absent from the prompt.
    responses = {t: [r if r.strip() else None for r in rs] for t, rs in responses.items()}

    scorer = build_quality_scorer("auto", qwen)
    quality, methods = score_quality_matrix(scorer, prompts, responses, refs)
    assert quality.shape == (24, 3)
    # One method per prompt: answers where a reference exists (0/1), the judge elsewhere.
    for i, ref in enumerate(refs):
        if ref is not None:
            assert methods[i] == answers_key("auto")
            assert set(quality[i][~np.isnan(quality[i])]) <= {0.0, 1.0}
        else:
            assert methods[i].startswith("judge:")
    learn = learnability_matrix(student, prompts, responses)
    assert np.all(learn[~np.isnan(learn)] < 0)
    # The student finds its own answers the most learnable on average.
    assert np.nanmean(learn[:, 0]) > max(np.nanmean(learn[:, 1]), np.nanmean(learn[:, 2]))

    labels = combine_labels(quality, learn, alpha=0.4)
    pairs = make_pairs(labels)
    assert len(pairs) > 24  # most prompts give several pairs

    encoder = load_encoder("zoo:minilm-l6-v2")
    router, report = train_router(
        prompts, labels, list(teachers), encoder=encoder, config=TrainConfig(seed=0, alpha=0.4)
    )
    assert report.n_train_pairs > 0
    routes = router.route(prompts)
    assert set(routes) <= set(teachers)

    out = save_router(router, tmp_path / "router")
    again = load_router(out, expected_teachers=list(teachers))
    assert again.route(prompts) == routes
    np.testing.assert_allclose(again.scores(prompts), router.scores(prompts), atol=1e-5)
