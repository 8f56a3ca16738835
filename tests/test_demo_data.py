"""The bundled demo data: 10K+ distinct math problems with independently re-checked answers, and
the hand-written instructions."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from fractions import Fraction
from importlib import resources

import pytest

from persyn.demo import (
    INSTRUCTION_CATEGORIES,
    demo_prompts,
    format_number,
    generate_math_problems,
    load_instructions,
    write_demo_prompts,
)
from persyn.prompts import load_prompts


def evaluate(expr: str) -> Fraction:
    """Exact value of an arithmetic expression (numbers, + - * /, parentheses) - written here,
    apart from the generator, so the check is independent of it."""
    ops = {
        ast.Add: lambda a, b: a + b,
        ast.Sub: lambda a, b: a - b,
        ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b,
    }

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return Fraction(ast.get_source_segment(expr, node))  # exact decimal, not the float
        raise AssertionError(f"unexpected syntax in {expr!r}: {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval"))


NUM = re.compile(r"\d+(?:\.\d+)?")
CONSTANTS = {Fraction(c) for c in (100, 60, 12, 1000)}  # percent, minutes, months, metres


@pytest.fixture(scope="module")
def problems():
    return generate_math_problems(10_000, seed=0)


def test_ten_thousand_distinct_problems(problems):
    assert len(problems) == 10_000
    assert len({p.prompt for p in problems}) == 10_000
    assert len({p.id for p in problems}) == 10_000
    assert all(p.id.startswith("math-") for p in problems)


def test_deterministic_by_seed(problems):
    again = generate_math_problems(10_000, seed=0)
    assert [(p.prompt, p.answer) for p in again] == [(p.prompt, p.answer) for p in problems]
    other = generate_math_problems(200, seed=1)
    assert [p.prompt for p in other] != [p.prompt for p in problems[:200]]
    assert generate_math_problems(50, seed=0) == problems[:50]  # a prefix: n does not reshuffle


def test_every_answer_recomputed_independently(problems):
    for p in problems:
        value = evaluate(p.expression)
        assert value >= 0 and (value * 100).denominator == 1, p
        assert Fraction(p.answer) == value, p
        assert re.fullmatch(r"\d+(\.\d{1,2})?", p.answer), p
        # The expression uses the numbers of the text (plus unit constants), so it is this
        # problem's computation and not some other one's.
        text_numbers = {Fraction(x) for x in NUM.findall(p.prompt)}
        expr_numbers = {Fraction(x) for x in NUM.findall(p.expression)}
        assert expr_numbers - CONSTANTS <= text_numbers, p


def test_graded_levels_and_several_templates_each(problems):
    by_level = Counter(p.difficulty for p in problems)
    assert by_level == {1: 2000, 2: 2000, 3: 2000, 4: 2000, 5: 2000}
    templates = {lv: {p.template for p in problems if p.difficulty == lv} for lv in range(1, 6)}
    assert all(len(t) >= 5 for t in templates.values()), templates
    # Higher levels need more arithmetic.
    ops = {
        lv: sum(len(re.findall(r"[-+*/]", p.expression)) for p in problems if p.difficulty == lv) / 2000
        for lv in range(1, 6)
    }
    assert ops[1] == 1 and ops[1] < ops[2] < ops[3] <= ops[4] < ops[5]
    # Names, objects and numbers vary.
    assert len({p.prompt.split()[0] for p in problems if p.template == "L1.add"}) > 30


def test_format_number():
    assert format_number(Fraction(5, 2)) == "2.5"
    assert format_number(Fraction(3, 4)) == "0.75"
    assert format_number(Fraction(40)) == "40"
    with pytest.raises(ValueError):
        format_number(Fraction(1, 3))
    with pytest.raises(ValueError):
        generate_math_problems(5, levels=(6,))


def test_instructions_file():
    rows = load_instructions()
    assert len(rows) >= 150
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["prompt"] for r in rows}) == len(rows)
    counts = Counter(r["category"] for r in rows)
    assert set(counts) == set(INSTRUCTION_CATEGORIES) and min(counts.values()) >= 25
    assert all(len(r["prompt"]) > 20 for r in rows)
    # Extraction prompts carry the text to extract from.
    for r in rows:
        if r["category"] == "extraction":
            instruction, _, material = r["prompt"].partition("\n\n")
            assert material or ":" in instruction, r
    # Shipped inside the package (pyproject package-data), loadable as a prompt file.
    path = resources.files("persyn.demo").joinpath("instructions.jsonl")
    assert path.is_file()
    ps = load_prompts(str(path), id_field="id")
    assert len(ps) == len(rows) and not ps.report.bad_rows and not ps.report.duplicates


def test_demo_prompts_and_file(tmp_path):
    rows = demo_prompts(n_math=120, n_instructions=40, seed=3)
    assert len(rows) == 160 and rows == demo_prompts(n_math=120, n_instructions=40, seed=3)
    assert rows != demo_prompts(n_math=120, n_instructions=40, seed=4)
    assert {tuple(sorted(r)) for r in rows} == {("answer", "category", "difficulty", "id", "prompt")}
    math_rows = [r for r in rows if r["category"] == "math"]
    assert len(math_rows) == 120 and all(r["answer"] and r["difficulty"] in range(1, 6) for r in math_rows)
    assert all(r["answer"] is None and r["difficulty"] is None for r in rows if r["category"] != "math")
    assert rows[:10] != math_rows[:10]  # shuffled together
    path = write_demo_prompts(tmp_path / "d" / "demo.jsonl", n_math=120, n_instructions=40, seed=3)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    ps = load_prompts(path, id_field="id", answer_field="answer")
    assert len(ps) == 160 and ps.report.n_with_answer == 120 and not ps.report.bad_rows
    assert ps.prompts[0].meta.keys() == {"category", "difficulty"}
    with pytest.raises(ValueError, match="n_instructions must be between 0 and"):
        demo_prompts(n_math=1, n_instructions=10_000)
