"""Instructions with verifiable constraints, the IFEval way (arXiv 2311.07911): a hand-written
base instruction carrying one or two constraints drawn from IFEval's instruction registry
(persyn.scoring.constraints, lm-eval's own registry and checkers), the constraints' descriptions
appended to the prompt as IFEval writes them.

    splits = constraint_splits(train=450, validation=150, test=300, pilot=40, seed=0)
    splits.test[3]
    # {"id": "inst-coding-031-c0", "prompt": "Write a function that converts a Roman numeral such
    #  as 'XIV' to an integer. Your answer must contain a title, wrapped in double angular
    #  brackets, such as <<poem of joy>>.", "answer": None, "category": "constraints",
    #  "difficulty": None, "base_id": "inst-coding-031", "base_category": "coding",
    #  "constraints": [{"id": "detectable_format:title", "kwargs": {}}]}
    # then: write_jsonl(path, splits.train); load_prompts(path, id_field="id")

Bases: the demo's instructions (instructions.jsonl) and the short ones of instructions_short.jsonl,
writing / explanation / advice / coding / extraction. The splits are disjoint by base (a base's
rows all sit in one split) and each is balanced over the categories; the demo's own held-out
instructions (`split_instructions`) only ever go to validation or test.

How a row is drawn (deterministic for the seed, the base and its row number, whatever the sizes):
the first type uniformly from `drawn_types()` (every type that can be checked here except those
in `NOT_DRAWN`); with probability `TWO_CONSTRAINTS_SHARE` a second one, uniformly from the types
that do not conflict with the first (the registry's `INSTRUCTION_CONFLICTS`); each type's
arguments drawn by the library itself, except `length_constraints:number_words`, whose threshold
comes from `NUMBER_WORDS_RANGE` (the library draws 100-500 words: too long for answers generated
on a 2-core CPU). Draws that no response can satisfy are drawn again (`compatible`, and the
library's own nth-paragraph draw, which can name a paragraph after the last), and a base's rows
carry different sets of types.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from persyn.demo.bundled import INSTRUCTION_CATEGORIES, load_instructions, split_instructions
from persyn.scoring.constraints import (
    check_response,
    conflicting,
    constraint_types,
    draw_constraint,
)

__all__ = [
    "NOT_DRAWN",
    "NUMBER_WORDS_RANGE",
    "TWO_CONSTRAINTS_SHARE",
    "ConstraintSplits",
    "compatible",
    "constrained_row",
    "constraint_bases",
    "constraint_splits",
    "drawn_types",
    "load_short_instructions",
]

#: Probability that a row asks for a second constraint (one that does not conflict with the first).
TWO_CONSTRAINTS_SHARE = 0.5
#: Types that can be checked (persyn.scoring.constraints) but are not put on these bases, and why.
NOT_DRAWN = {
    "detectable_format:constrained_response": (
        "it asks for a reply containing 'My answer is yes.', '...no.' or '...maybe.', which fits a "
        "yes/no question; none of the base requests is one ('How can I make new friends?')"
    ),
}
#: Thresholds of "Answer with less than / at least N words." (inclusive). lm-eval draws 100-500:
#: "at least 400 words" is ~550 tokens, several times what the miniature generates per answer on
#: a 2-core CPU, and the base requests want a few sentences to ~150 words.
NUMBER_WORDS_RANGE = (20, 80)
REPEAT = "combination:repeat_prompt"
# "At most" types: a text that breaks one of them still breaks it inside any longer response.
_AT_MOST = {"keywords:forbidden_words", "punctuation:no_comma"}
_AT_MOST_RELATION = {"keywords:letter_frequency": "let_relation", "keywords:frequency": "relation"}
_MAX_ATTEMPTS = 200


@lru_cache(maxsize=1)
def _short_instructions() -> tuple[dict[str, Any], ...]:
    text = resources.files("persyn.demo").joinpath("instructions_short.jsonl").read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def load_short_instructions() -> list[dict[str, Any]]:
    """The short hand-written requests of instructions_short.jsonl (id, category, prompt)."""
    return [dict(r) for r in _short_instructions()]


def constraint_bases() -> list[dict[str, Any]]:
    """Every base instruction: the demo's (instructions.jsonl), then the short ones."""
    return load_instructions() + load_short_instructions()


def drawn_types() -> tuple[str, ...]:
    """The types rows are drawn from (sorted): `constraint_types()` less `NOT_DRAWN`."""
    return tuple(t for t in constraint_types() if t not in NOT_DRAWN)


def _forced_text(c: dict[str, Any]) -> str:
    """Text that every response meeting `c` contains (up to case), "" when nothing is fixed."""
    kw = c["kwargs"]
    match c["id"]:
        case "keywords:existence":
            return " ".join(kw["keywords"])
        case "keywords:frequency" if kw["relation"] == "at least":
            return " ".join([kw["keyword"]] * kw["frequency"])
        case "length_constraints:nth_paragraph_first_word":
            return kw["first_word"]
        case "startend:end_checker":
            return kw["end_phrase"]
        case "detectable_content:postscript":
            return kw["postscript_marker"]
        case "combination:repeat_prompt":
            return kw["prompt_to_repeat"]
        case "detectable_format:multiple_sections":
            return " ".join(f"{kw['section_spliter']} {i}" for i in range(1, kw["num_sections"] + 1))
    return ""


def compatible(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether one response can meet both constraints, as far as their arguments show: the text
    one of them forces into the response must not already break an "at most" rule of the other
    (judged by the library's checker: a forbidden word, a comma, too many of a letter or word),
    and the section markers ("Section 1", case-sensitive in the checker) must fit an all-lowercase
    or all-capitals rule. Type conflicts are `conflicting`'s business."""
    for x, y in ((a, b), (b, a)):
        forced = _forced_text(x)
        if not forced:
            continue
        at_most = y["id"] in _AT_MOST or y["kwargs"].get(_AT_MOST_RELATION.get(y["id"], "")) == "less than"
        if at_most and not check_response(forced, [y]).strict[0]:
            return False
        if x["id"] == "detectable_format:multiple_sections":
            if y["id"] == "change_case:english_lowercase" and forced != forced.lower():
                return False
            if y["id"] == "change_case:english_capital" and forced != forced.upper():
                return False
    return True


def _join(parts: list[str]) -> str:
    """IFEval's layout: descriptions follow the request, separated by a space, or by a blank
    line where either side spans several lines (an extraction text, a bullet-list example)."""
    text = parts[0]
    for before, part in zip(parts, parts[1:], strict=False):
        text += " " if "\n" not in before and "\n" not in part else "\n\n"
        text += part
    return text


def _draw_types(rng: random.Random, two_share: float) -> list[str]:
    types = drawn_types()
    first = rng.choice(types)
    chosen = [first]
    if rng.random() < two_share:
        partners = [t for t in types if t != first and not conflicting(first, t)]
        if partners:
            chosen.append(rng.choice(partners))
    # The repeated request is everything before this sentence (its own wording says so).
    return sorted(chosen, key=lambda t: t == REPEAT)


def _draw_arguments(type_id: str, rng: random.Random) -> tuple[dict[str, Any], str]:
    arguments: dict[str, Any] = {}
    if type_id == "length_constraints:number_words":
        arguments["num_words"] = rng.randint(*NUMBER_WORDS_RANGE)
    while True:
        constraint, description = draw_constraint(type_id, rng.getrandbits(63), **arguments)
        kw = constraint["kwargs"]
        # lm-eval draws the paragraph to start from 1..num_paragraphs + 1; the last one no
        # response can meet (the checker needs it to exist), so that draw is made again.
        if (
            type_id != "length_constraints:nth_paragraph_first_word"
            or kw["nth_paragraph"] <= kw["num_paragraphs"]
        ):
            return constraint, description


def constrained_row(
    base: dict[str, Any],
    number: int = 0,
    seed: int = 0,
    two_share: float = TWO_CONSTRAINTS_SHARE,
    avoid: frozenset[frozenset[str]] | set[frozenset[str]] = frozenset(),
) -> dict[str, Any]:
    """Row `number` of `base` (id `<base id>-c<number>`): its prompt with one or two constraints
    (module docstring), drawn from a generator seeded by `seed`, the base id and `number`; a set
    of types in `avoid` (the base's other rows) is not drawn again."""
    if not 0 <= two_share <= 1:
        raise ValueError("two_share must be between 0 and 1")
    rng = random.Random(f"persyn-constraints/{seed}/{base['id']}/{number}")
    for _ in range(_MAX_ATTEMPTS):
        types = _draw_types(rng, two_share)
        if frozenset(types) in avoid:
            continue
        constraints, parts = [], [base["prompt"]]
        for type_id in types:
            if type_id == REPEAT:
                c, description = draw_constraint(type_id, rng.getrandbits(63), prompt_to_repeat=_join(parts))
            else:
                c, description = _draw_arguments(type_id, rng)
            constraints.append(c)
            parts.append(description)
        if len(constraints) == 2 and not compatible(*constraints):
            continue
        return {
            "id": f"{base['id']}-c{number}",
            "prompt": _join(parts),
            "answer": None,
            "category": "constraints",
            "difficulty": None,
            "base_id": base["id"],
            "base_category": base["category"],
            "constraints": constraints,
        }
    raise RuntimeError(f"no new constraint set for {base['id']} after {_MAX_ATTEMPTS} draws")


@dataclass(frozen=True)
class ConstraintSplits:
    """Constrained-instruction rows in four splits, disjoint by base instruction."""

    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]
    pilot: list[dict[str, Any]]

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {"train": self.train, "validation": self.validation, "test": self.test, "pilot": self.pilot}


def _base_order(seed: int) -> tuple[list[dict[str, Any]], set[str]]:
    """All bases, categories in turn (so that any run of them is balanced), each category's
    shuffled; the demo's held-out instructions first within their category. Also their ids."""
    _, demo_held = split_instructions()
    reserved = {r["id"] for r in demo_held}
    rng = random.Random(f"persyn-constraint-bases/{seed}")
    lists = []
    for cat in INSTRUCTION_CATEGORIES:
        rows = [r for r in constraint_bases() if r["category"] == cat]
        first = [r for r in rows if r["id"] in reserved]
        rest = [r for r in rows if r["id"] not in reserved]
        rng.shuffle(first)
        rng.shuffle(rest)
        lists.append(first + rest)
    order = [rows[j] for j in range(max(map(len, lists))) for rows in lists if j < len(rows)]
    return order, reserved


def _rows(bases: list[dict[str, Any]], n: int, seed: int, two_share: float) -> list[dict[str, Any]]:
    """`n` rows cycling over `bases` in order: the first pass gives each base its row 0, the
    next its row 1 (a different set of constraint types), and so on."""
    rows: list[dict[str, Any]] = []
    taken: dict[str, set[frozenset[str]]] = {}
    for i in range(n):
        base = bases[i % len(bases)]
        seen = taken.setdefault(base["id"], set())
        row = constrained_row(base, i // len(bases), seed, two_share, seen)
        seen.add(frozenset(c["id"] for c in row["constraints"]))
        rows.append(row)
    return rows


def constraint_splits(
    *,
    train: int,
    validation: int,
    test: int,
    pilot: int = 0,
    seed: int = 0,
    two_share: float = TWO_CONSTRAINTS_SHARE,
) -> ConstraintSplits:
    """Rows for training, validation, test and a pilot, from disjoint sets of base instructions.

    Test, validation and pilot each get a share of the bases in proportion to their rows (at
    least one, at most one per row), in that order from `_base_order`; training gets all the
    bases left, less the demo's held-out instructions (those never reach training or the pilot,
    and go unused when the held-out splits are too small to take them). Each split cycles over
    its bases, so a base carries several rows (different constraint types) when a split has
    more rows than bases. The same arguments give the same rows; a row's constraints depend only
    on the seed, its base and its number, not on the sizes."""
    sizes = {"test": test, "validation": validation, "pilot": pilot, "train": train}
    for name, n in sizes.items():
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be a whole number >= 0, not {n!r}")
    order, reserved = _base_order(seed)
    total = sum(sizes.values())

    def share(name: str) -> int:
        n = sizes[name]
        return min(n, max(round(len(order) * n / total), 1)) if n else 0

    bases: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for name in ("test", "validation"):
        bases[name] = order[start : start + share(name)]
        start += len(bases[name])
    rest = [r for r in order[start:] if r["id"] not in reserved]
    bases["pilot"], bases["train"] = rest[: share("pilot")], rest[share("pilot") :]
    for name, n in sizes.items():
        if n and not bases[name]:
            raise ValueError(
                f"no base instruction left for the {name} split: the {len(order)} bases are all "
                "taken by the others; ask for fewer held-out rows"
            )
    return ConstraintSplits(**{name: _rows(bases[name], n, seed, two_share) for name, n in sizes.items()})
