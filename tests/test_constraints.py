"""Verifiable-constraint instructions (persyn.scoring.constraints, persyn.demo.constraint_prompts):
lm-eval's IFEval checkers through our wrapper, the short base instructions, and the rows drawn
from them."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

import persyn
from persyn.demo import INSTRUCTION_CATEGORIES, load_instructions, split_instructions, write_jsonl
from persyn.demo.constraint_prompts import (
    NOT_DRAWN,
    NUMBER_WORDS_RANGE,
    compatible,
    constrained_row,
    constraint_bases,
    constraint_splits,
    drawn_types,
    load_short_instructions,
)
from persyn.prompts import load_prompts
from persyn.scoring.constraints import (
    EXCLUDED_TYPES,
    INSTALL_HINT,
    ConstraintError,
    check_response,
    conflicting,
    constraint_types,
    describe,
    draw_constraint,
    validate_constraints,
)

SRC = str(Path(persyn.__file__).parents[1])

# One response that meets each type and one that does not (neither strictly nor loosely).
CASES = {
    "change_case:english_capital": (
        {},
        "THE SKY LOOKS BLUE BECAUSE THE AIR SCATTERS THE BLUE PART OF SUNLIGHT MORE THAN THE RED PART.",
        "The sky looks blue because the air scatters the blue part of sunlight more than the red part.",
    ),
    "change_case:english_lowercase": (
        {},
        "the sky looks blue because the air scatters the blue part of sunlight more than the red part.",
        "The sky looks blue because the air scatters the blue part of sunlight more than the red part.",
    ),
    "combination:repeat_prompt": (
        {"prompt_to_repeat": "Write a haiku about rain."},
        "Write a haiku about rain.\nSoft rain on the roof\nthe gutters hum a low song\nthe cat stays inside",
        "Soft rain on the roof\nthe gutters hum a low song\nthe cat stays inside",
    ),
    "combination:two_responses": (
        {},
        "Tea calms me down.\n******\nCoffee wakes me up.",
        "Tea calms me down and coffee wakes me up.",
    ),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        "Dear [name], see you at [place] on Friday.",
        "Dear [name], see you at the station on Friday.",
    ),
    "detectable_content:postscript": (
        {"postscript_marker": "P.S."},
        "See you on Friday.\nP.S. Bring the cake.",
        "See you on Friday. Bring the cake.",
    ),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Yes, definitely."),
    "detectable_format:json_format": ({}, '```json\n{"name": "Ana", "age": 34}\n```', "name: Ana, age: 34"),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nSet a timer for 25 minutes.\nSection 2\nTake a five-minute break.",
        "Set a timer for 25 minutes, then take a five-minute break.",
    ),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 2},
        "* Drink a glass of water.\n* Go to bed at the same time.",
        "Drink a glass of water and go to bed at the same time.",
    ),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2},
        "Rinse it with *cold water* and a little *mild soap*.",
        "Rinse it with cold water and a little mild soap.",
    ),
    "detectable_format:title": (
        {},
        "<<Rainy Days>>\nThe rain fell all afternoon.",
        "Rainy Days\nThe rain fell all afternoon.",
    ),
    "keywords:existence": (
        {"keywords": ["river", "stone"]},
        "A smooth stone sat by the river.",
        "A smooth rock sat by the lake.",
    ),
    "keywords:forbidden_words": (
        {"forbidden_words": ["river", "stone"]},
        "A smooth rock sat by the lake.",
        "A smooth stone sat by the lake.",
    ),
    "keywords:frequency": (
        {"keyword": "garden", "frequency": 2, "relation": "at least"},
        "The garden is small, but a small garden is easy to keep.",
        "The yard is small and easy to keep.",
    ),
    "keywords:letter_frequency": (
        {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
        "Zebras zigzag through the maze.",
        "Horses run across the field.",
    ),
    "language:response_language": (
        {"language": "fr"},
        "Le ciel est bleu parce que l'air diffuse davantage la lumière bleue du soleil.",
        "The sky is blue because the air scatters the blue light of the sun more.",
    ),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "finally"},
        "First, boil the water.\n\nFinally, pour it over the tea leaves.",
        "First, boil the water.\n\nThen pour it over the tea leaves.",
    ),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2},
        "Boil the water.\n***\nPour it over the tea leaves.",
        "Boil the water. Pour it over the tea leaves.",
    ),
    "length_constraints:number_words": (
        {"num_words": 6, "relation": "less than"},
        "Boil water, then pour.",
        "Boil the water first and then pour it over the tea leaves.",
    ),
    "punctuation:no_comma": ({}, "Boil the water and then pour it.", "Boil the water, then pour it."),
    "startend:end_checker": (
        {"end_phrase": "Any other questions?"},
        "Boil the water first. Any other questions?",
        "Any other questions? Boil the water first.",
    ),
    "startend:quotation": ({}, '"Boil the water first."', "Boil the water first."),
}


# --------------------------------------------------------------------------------------------------
# checking (persyn.scoring.constraints)


def test_the_cases_cover_every_type_that_can_be_checked():
    assert set(CASES) == set(constraint_types())
    assert len(constraint_types()) == 23 and not set(constraint_types()) & set(EXCLUDED_TYPES)


@pytest.mark.parametrize("type_id", sorted(CASES))
def test_each_type_passes_and_fails_under_the_library_checker(type_id):
    kwargs, good, bad = CASES[type_id]
    constraint = [{"id": type_id, "kwargs": kwargs}]
    passed = check_response(good, constraint)
    assert passed.strict == (True,) and passed.loose == (True,), good
    failed = check_response(bad, constraint)
    assert failed.strict == (False,) and failed.loose == (False,), bad
    assert failed.fraction_strict == 0.0 and not failed.all_loose


def test_strict_and_loose_differ_on_a_markdown_title_line():
    """IFEval's loose check also reads the response without its first line (and without `*`)."""
    quoted = check_response('# Answer\n"Boil the water first."', [{"id": "startend:quotation", "kwargs": {}}])
    assert quoted.strict == (False,) and quoted.loose == (True,)
    titled = check_response(
        "**Tips, in short**\nDrink water and sleep well.", [{"id": "punctuation:no_comma", "kwargs": {}}]
    )
    assert titled.strict == (False,) and titled.loose == (True,)


def test_item_scores_of_two_constraints():
    constraints = [
        {"id": "punctuation:no_comma", "kwargs": {}},
        {"id": "keywords:existence", "kwargs": {"keywords": ["river", "stone"]}},
    ]
    check = check_response("A stone sat by the river, quietly.", constraints, prompt="Describe a river.")
    assert check.ids == ("punctuation:no_comma", "keywords:existence")
    assert check.strict == (False, True) and check.fraction_strict == 0.5 and not check.all_strict
    assert check.as_dict()["fraction_loose"] == 0.5
    both = check_response("A stone sat by the river.", constraints)
    assert both.all_strict and both.all_loose and both.fraction_loose == 1.0
    assert check_response("   ", constraints).strict == (False, False)  # IFEval: empty meets nothing


def test_ifeval_data_with_unused_argument_names_is_accepted():
    """IFEval's data lists every argument name, None where unused (and unsorted keyword lists)."""
    row = {"id": "keywords:existence", "kwargs": {"keywords": ["stone", "river"], "num_words": None}}
    assert validate_constraints([row]) == [
        {"id": "keywords:existence", "kwargs": {"keywords": ["stone", "river"]}}
    ]
    assert check_response("river stone", [row]).strict == (True,)


def test_language_verdicts_are_reproducible():
    import langdetect
    from langdetect import DetectorFactory

    # Words of several languages: langdetect alone samples its way to pl, hr, it, ... by chance.
    text = "Ok so merci gracias danke grazie."
    check_response(text, [{"id": "punctuation:no_comma", "kwargs": {}}])  # lm-eval loaded
    assert DetectorFactory.seed is None
    assert len({langdetect.detect(text) for _ in range(40)}) > 1
    constraints = [{"id": "language:response_language", "kwargs": {"language": "it"}}]
    verdicts = {check_response(text, constraints).strict for _ in range(40)}
    assert len(verdicts) == 1
    assert DetectorFactory.seed is None  # put back


def test_excluded_and_unknown_types_and_bad_arguments_are_refused():
    for type_id, reason in EXCLUDED_TYPES.items():
        with pytest.raises(ConstraintError, match="excluded.*nltk"):
            check_response("Some text.", [{"id": type_id, "kwargs": {}}])
        with pytest.raises(ConstraintError, match="excluded"):
            draw_constraint(type_id, 0)
        assert "cannot be downloaded" in reason
    with pytest.raises(
        ConstraintError, match="unknown constraint type 'keywords:nonsense'.*punctuation:no_comma"
    ):
        check_response("x", [{"id": "keywords:nonsense", "kwargs": {}}])
    with pytest.raises(ConstraintError, match=r"exactly the keys \['keywords'\]"):
        check_response("x", [{"id": "keywords:existence", "kwargs": {}}])  # the library would draw them
    with pytest.raises(ConstraintError, match="empty"):
        check_response("x", [{"id": "keywords:existence", "kwargs": {"keywords": []}}])
    with pytest.raises(ConstraintError, match="out of the library's range"):
        describe(
            {
                "id": "length_constraints:nth_paragraph_first_word",
                "kwargs": {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "then"},
            }
        )
    with pytest.raises(ConstraintError, match="refused"):
        describe({"id": "length_constraints:number_words", "kwargs": {"num_words": 5, "relation": "about"}})
    with pytest.raises(ConstraintError, match="non-empty list"):
        check_response("x", [])
    with pytest.raises(ConstraintError, match="a constraint is"):
        check_response("x", ["punctuation:no_comma"])


def test_the_excluded_types_really_need_missing_nltk_data():
    """The reason for leaving them out holds on this machine: the library's own checker fails."""
    import nltk
    from lm_eval.tasks.ifeval import instructions_registry

    try:
        nltk.data.find("tokenizers/punkt_tab")
        pytest.skip("nltk's punkt_tab data is installed here")
    except LookupError:
        pass
    for type_id in EXCLUDED_TYPES:
        instruction = instructions_registry.INSTRUCTION_DICT[type_id](type_id)
        instruction.build_description()
        with pytest.raises(LookupError):
            instruction.check_following("One sentence. TWO SENTENCES.")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_and_first_check_are_quiet():
    """lm-eval's import tries to download nltk data and prints about it; ours prints nothing."""
    done = _run(
        "import nltk; download = nltk.download\n"
        "from persyn.scoring.constraints import check_response\n"
        "c = check_response('a, b', [{'id': 'punctuation:no_comma', 'kwargs': {}}])\n"
        "print(c.strict, nltk.download is download)\n"
        "check_response('12345', [{'id': 'language:response_language', 'kwargs': {'language': 'en'}}])\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "(False,) True\n"
    assert done.stderr == ""


def test_a_missing_lm_eval_names_the_install_command():
    done = _run(
        "import sys; sys.modules['lm_eval'] = None\n"
        "from persyn.scoring.constraints import ConstraintError, constraint_types\n"
        "try:\n    constraint_types()\nexcept ConstraintError as e:\n    print(e)\n"
    )
    assert done.returncode == 0, done.stderr
    assert INSTALL_HINT in done.stdout and "lm-eval[ifeval]==0.4.13" in done.stdout


def test_drawing_is_deterministic_and_leaves_global_random_alone():
    random.seed(1234)
    state = random.getstate()
    first = draw_constraint("keywords:letter_frequency", 7)
    assert random.getstate() == state
    assert draw_constraint("keywords:letter_frequency", 7) == first
    assert {json.dumps(draw_constraint("keywords:existence", s)[0]) for s in range(10)}.__len__() > 1
    constraint, description = draw_constraint("length_constraints:number_words", 3, num_words=40)
    assert constraint["kwargs"]["num_words"] == 40 and describe(constraint) == description
    assert json.loads(json.dumps(constraint)) == constraint


def test_conflicts_are_the_registry_table_made_symmetric():
    assert conflicting("combination:repeat_prompt", "keywords:frequency")
    # Listed one way only in INSTRUCTION_CONFLICTS (under response_language).
    assert conflicting("keywords:existence", "language:response_language")
    assert conflicting("language:response_language", "keywords:existence")
    assert not conflicting("punctuation:no_comma", "detectable_format:title")
    assert all(conflicting("detectable_format:constrained_response", t) for t in constraint_types())


# --------------------------------------------------------------------------------------------------
# the short base instructions (instructions_short.jsonl)

STOP = set(
    "a an the of to in on for and or with is are be it this that my i me can how what why do does "
    "should some from as at by your about into out than its which who".split()
)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in STOP}


def test_short_instructions_file():
    rows = load_short_instructions()
    old = load_instructions()
    assert len(rows) >= 230
    assert len({r["id"] for r in rows + old}) == len(rows) + len(old)
    assert len({r["prompt"] for r in rows + old}) == len(rows) + len(old)
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == set(INSTRUCTION_CATEGORIES) and min(counts.values()) >= 45
    for r in rows:
        assert r.keys() == {"id", "category", "prompt"} and r["id"].startswith(f"short-{r['category']}-")
        request = r["prompt"].split("\n")[0]
        assert 20 < len(request) < 200 and request.rstrip()[-1] in ".?:'", r
        if r["category"] == "extraction":  # the material to extract from comes with the request
            instruction, _, material = r["prompt"].partition("\n\n")
            assert material or ":" in instruction, r
    path = resources.files("persyn.demo").joinpath("instructions_short.jsonl")  # shipped in the package
    ps = load_prompts(str(path), id_field="id")
    assert len(ps) == len(rows) and not ps.report.bad_rows and not ps.report.duplicates


def test_no_near_duplicates_among_the_short_instructions_or_with_the_demo_ones():
    """No two requests share most of their content words (a paraphrase of the same request)."""
    new = [(r["id"], _words(r["prompt"])) for r in load_short_instructions()]
    old = [(r["id"], _words(r["prompt"])) for r in load_instructions()]
    pairs = list(itertools.combinations(new, 2)) + list(itertools.product(new, old))
    close = [(a, b) for (a, wa), (b, wb) in pairs if len(wa & wb) / len(wa | wb) >= 0.6]
    assert not close, close


# --------------------------------------------------------------------------------------------------
# constrained rows and splits (persyn.demo.constraint_prompts)

SIZES = {"train": 450, "validation": 150, "test": 300, "pilot": 40}


@pytest.fixture(scope="module")
def splits():
    return constraint_splits(**SIZES, seed=0)


def test_split_sizes_and_row_format(splits):
    for name, rows in splits.as_dict().items():
        assert len(rows) == SIZES[name]
        assert len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            assert r.keys() == {
                "id",
                "prompt",
                "answer",
                "category",
                "difficulty",
                "base_id",
                "base_category",
                "constraints",
            }
            assert r["answer"] is None and r["category"] == "constraints" and r["difficulty"] is None
            assert json.loads(json.dumps(r)) == r


def test_splits_are_disjoint_by_base_and_keep_the_demo_held_out_out_of_training(splits):
    bases = {name: {r["base_id"] for r in rows} for name, rows in splits.as_dict().items()}
    for a, b in itertools.combinations(bases, 2):
        assert not bases[a] & bases[b], (a, b)
    demo_held = {r["id"] for r in split_instructions()[1]}
    assert not demo_held & (bases["train"] | bases["pilot"])
    assert demo_held <= bases["test"] | bases["validation"]
    # More rows than bases: a base carries several rows, each with another set of types.
    per_base = Counter(r["base_id"] for r in splits.train)
    assert len(per_base) < SIZES["train"] and max(per_base.values()) - min(per_base.values()) <= 1
    for name, rows in splits.as_dict().items():
        sets = Counter((r["base_id"], frozenset(c["id"] for c in r["constraints"])) for r in rows)
        assert max(sets.values()) == 1, name
        cats = Counter(r["base_category"] for r in rows)
        assert set(cats) == set(INSTRUCTION_CATEGORIES) and max(cats.values()) < 2 * min(cats.values()), name


def test_rows_are_the_library_descriptions_of_drawn_non_conflicting_constraints(splits):
    rows = [r for rs in splits.as_dict().values() for r in rs]
    bases = {b["id"]: b for b in constraint_bases()}
    used = Counter(c["id"] for r in rows for c in r["constraints"])
    assert set(used) == set(drawn_types()) and not set(used) & set(NOT_DRAWN)
    n = Counter(len(r["constraints"]) for r in rows)
    assert set(n) == {1, 2} and 0.4 < n[2] / len(rows) < 0.6  # TWO_CONSTRAINTS_SHARE = 0.5
    for r in rows:
        assert r["base_category"] == bases[r["base_id"]]["category"]
        assert r["prompt"].startswith(bases[r["base_id"]]["prompt"])
        position = 0
        for c in r["constraints"]:  # each description, in order, as the library writes it
            position = r["prompt"].index(describe(c), position)
        assert r["prompt"].endswith(describe(r["constraints"][-1]))
        if len(r["constraints"]) == 2:
            a, b = r["constraints"]
            assert not conflicting(a["id"], b["id"]) and compatible(a, b)
        for c in r["constraints"]:
            kw = c["kwargs"]
            if c["id"] == "length_constraints:number_words":
                assert NUMBER_WORDS_RANGE[0] <= kw["num_words"] <= NUMBER_WORDS_RANGE[1]
            if c["id"] == "length_constraints:nth_paragraph_first_word":
                assert kw["nth_paragraph"] <= kw["num_paragraphs"]
            if c["id"] == "combination:repeat_prompt":
                assert c is r["constraints"][-1]
                rest = r["prompt"].removeprefix(kw["prompt_to_repeat"])
                assert rest != r["prompt"] and rest.startswith((" First repeat", "\n\nFirst repeat"))
                # The repeat instruction is met by repeating exactly that text.
                assert check_response(kw["prompt_to_repeat"] + "\nMy answer.", [c]).all_strict


def test_compatible_refuses_pairs_no_response_can_meet():
    def c(type_id, **kwargs):
        return {"id": type_id, "kwargs": kwargs}

    assert not compatible(
        c("keywords:forbidden_words", forbidden_words=["river", "stone"]),
        c("keywords:existence", keywords=["stone", "tea"]),
    )
    assert not compatible(
        c("combination:repeat_prompt", prompt_to_repeat="Milk, eggs and bread."), c("punctuation:no_comma")
    )
    assert compatible(
        c("combination:repeat_prompt", prompt_to_repeat="Milk and bread."), c("punctuation:no_comma")
    )
    assert not compatible(
        c("change_case:english_lowercase"),
        c("detectable_format:multiple_sections", section_spliter="Section", num_sections=2),
    )
    assert compatible(
        c("change_case:english_capital"),
        c("detectable_format:multiple_sections", section_spliter="SECTION", num_sections=2),
    )
    assert not compatible(
        c("keywords:letter_frequency", letter="n", let_frequency=2, let_relation="less than"),
        c("startend:end_checker", end_phrase="Is there anything else I can help with?"),
    )
    assert compatible(
        c("keywords:letter_frequency", letter="n", let_frequency=2, let_relation="at least"),
        c("startend:end_checker", end_phrase="Is there anything else I can help with?"),
    )
    assert compatible(c("detectable_format:title"), c("keywords:existence", keywords=["stone", "tea"]))


def test_splits_are_deterministic_and_leave_global_random_alone(splits):
    random.seed(99)
    state = random.getstate()
    again = constraint_splits(**SIZES, seed=0)
    assert random.getstate() == state
    assert again == splits
    other = constraint_splits(**SIZES, seed=1)
    assert other.test != splits.test and other.train != splits.train


def test_a_row_depends_on_its_seed_base_and_number_not_on_the_sizes(splits):
    small = constraint_splits(train=30, validation=10, test=20, pilot=5, seed=0)
    big = {r["id"]: r for rs in splits.as_dict().values() for r in rs}
    shared = [r for rs in small.as_dict().values() for r in rs if r["id"] in big]
    assert len(shared) > 20
    assert all(big[r["id"]] == r for r in shared)
    base = constraint_bases()[0]
    assert constrained_row(base, 0, seed=0) == constrained_row(base, 0, seed=0)
    assert constrained_row(base, 0, seed=0) != constrained_row(base, 0, seed=5)


def test_split_arguments_are_checked():
    with pytest.raises(ValueError, match="train must be a whole number"):
        constraint_splits(train=-1, validation=0, test=0)
    only_train = constraint_splits(train=12, validation=0, test=0)
    assert len(only_train.train) == 12 and not only_train.test and not only_train.validation
    with pytest.raises(ValueError, match="two_share"):
        constrained_row(constraint_bases()[0], 0, two_share=1.5)


def test_rows_load_as_a_prompt_file(tmp_path, splits):
    path = write_jsonl(tmp_path / "constraints.jsonl", splits.validation)
    ps = load_prompts(path, id_field="id", answer_field="answer")
    assert len(ps) == len(splits.validation) and not ps.report.bad_rows
    assert ps.prompts[0].meta["constraints"] == splits.validation[0]["constraints"]
