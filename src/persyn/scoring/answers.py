"""Verifiable answers: does a response's final answer equal the reference answer?

The paper scores math prompts by the correctness of the final answer, and the student's evaluation
scores held-out prompts the same way, so a wrong verdict poisons both. Checking has two steps.

1. **The final answer** of a response, and nothing else: the last ``\\boxed{...}``, else the last
   ``#### X`` line, else the last "the answer is X" / "Answer: X" phrase (up to the end of its
   clause: "8, because 3 + 5 = 8" answers 8), else the last non-empty line. A number elsewhere in
   the response never counts.
2. **Comparison**, by a checker chosen per prompt set (``prompts.answer_checker``):

   - ``numeric``: the final answer must be a plain number (``1,000``, ``$1,000.00``, ``-5``,
     ``3/4``, ``\\frac{3}{4}``, ``25%``, ``x = 12``, ``42 km``), compared with a relative tolerance
     of 1e-6; ``p%`` matches ``p`` and ``p/100``. Anything with more maths in it (``\\pi/2``,
     ``2\\sqrt{2}``, ``(1, 2)``) is not a plain number and scores 0. Pure Python, microseconds.
   - ``math``: Hugging Face's ``math-verify`` parses both sides (LaTeX or plain) into SymPy and
     compares them symbolically: expressions, fractions, roots, pi, intervals (open vs closed),
     sets, tuples (order matters), equations; units in ``\\text{}`` are dropped.
   - ``exact``: case-, article- and whitespace-insensitive text equality, brackets and sentence
     punctuation at the ends ignored (``(B).`` answers ``B``); every other symbol counts.
   - ``auto`` (default): by the reference alone, so every teacher of a prompt is judged alike:
     a plain-number reference uses the numeric path when the final answer is a plain number and
     ``math`` otherwise; a reference of words (``Paris``, ``B``) uses ``exact``; anything else
     ``math``.

``math-verify`` runs in a pool of worker processes (pebble, `math_pool.py`), one item per task with a
time limit (`timeout_s`, default 5 s): a worker that overruns is killed and replaced, and the item scores 0
with the reason "timeout". A process is the one limit that holds everywhere: math-verify's own
limit is ``signal.alarm``, which raises in any thread but the main one (executor threads, threaded
Ray actors), takes whole seconds, and cannot stop a Python big-integer operation that never
returns to the interpreter (``10^{10^{10}}``). The pool lives in a helper started with
`subprocess`, so the caller's script is never re-imported: a plain script without an
``if __name__ == "__main__":`` guard checks answers too, and so does a daemonic process.

    checker = AnswerChecker("auto")
    checker.check("The answer is \\boxed{x^2-1}", "x^2+1")  # Verdict(correct=False, reason, method="math")
    checker.check_many(responses, references)               # math items verified in parallel
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Literal, get_args

from persyn.scoring.math_pool import run_math

Checker = Literal["auto", "numeric", "math", "exact"]
CHECKERS: tuple[str, ...] = get_args(Checker)
DEFAULT_TIMEOUT_S = 5.0
# Bump when a verdict of the same (response, reference) can change: it is part of the store key,
# so stored answer scores are recomputed (and nothing else).
CHECKER_VERSION = 2
Reference = str | float | int

# A number as people and models write it: optional sign and currency, thousands commas, decimals,
# scientific notation, a fraction, an optional trailing percent sign. Order matters: the
# comma-grouped form first, so "1,000" is one number and "1,2" is two.
_NUMBER = re.compile(
    r"""
    (?P<sign>[-+\u2212])?\s*
    (?P<cur>[$\u20ac\u00a3\u00a5]|\\\$)?\s*
    (?P<sign2>[-+\u2212])?
    (?P<num>
        \d{1,3}(?:,\d{3})+(?:\.\d+)?
      | \d+(?:\.\d+)?(?:[eE][-+]?\d+)?
      | \.\d+
    )
    (?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?
    (?P<pct>\s*(?:\\?%|percent\b))?
    """,
    re.VERBOSE,
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_HASHES = re.compile(r"####\s*(.+)")
# "the answer is 42", "Final answer: 42", "Answer = 42"; the segment runs to the end of the line.
_ANSWER_PHRASE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is\s*[:=]?|[:=])\s*(?P<ans>[^\n]*)",
    re.IGNORECASE,
)
# Where the answer's clause ends: a sentence stop, or a comma/space before a justification.
_CLAUSE_END = re.compile(
    r"[.;!?](?=\s|$)|,?\s+(?=(?:because|since|as|so|which|but|though|not|and\s+not|hence|thus)\b)",
    re.IGNORECASE,
)
# Left over once the numbers are taken out of a final answer, any of these means there is more
# maths than one number: operators, brackets, powers, roots, pi, a LaTeX command, a lone minus.
_MATH_LEFT = re.compile(
    r"[\\^_{}\[\]()=<>\u2264\u2265\u221a\u03c0\u221e\u00b1\u00d7\u00f7*/+|]"
    r"|\b(?:sqrt|pi|infty|ln|log|sin|cos|tan|exp)\b"
    r"|(?:(?<=\W)|^)-(?=\W|$)|\s-\s"
)
# "2x", "3i" (not "5th", "1e3") and a factorial "10!".
_GLUED_VARIABLE = re.compile(r"\d(?:\.\d+)?(?:[a-df-zA-DF-Z](?![a-zA-Z])|!)")
# Words that still read as maths (LaTeX command names); any other word of 3+ letters makes a final
# answer prose, which math-verify reads with its own extraction instead of as one formula.
_MATH_WORDS = set(
    "sqrt frac dfrac tfrac infty cdot times sin cos tan log exp leq geq neq circ text mathrm left "
    "right cup cap and boxed".split()
)
_TEXT_ONLY = re.compile(r"^[^\d\\^_{}=<>+*/|\u221a\u03c0]*$")  # words and punctuation, no maths
_WRAP = r"[\"'`\u201c\u201d\u2018\u2019()\[\]{}.,;:!?]+"
_REL_TOL = 1e-6
_log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- the final answer


@dataclass(frozen=True)
class FinalAnswer:
    """The part of a response that states its answer, and where it was found."""

    text: str
    source: Literal["boxed", "hashes", "phrase", "line"]


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces balanced; an unclosed box
    (the model stopped mid-answer) gives what follows its brace."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[brace + 1 : i]
    return text[brace + 1 :]


def _clause(text: str) -> str:
    m = _CLAUSE_END.search(text)
    return (text[: m.start()] if m else text).strip()


def _explicit(text: str) -> FinalAnswer | None:
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return FinalAnswer(boxed.strip(), "boxed")
    hashes = _HASHES.findall(text)
    if hashes and hashes[-1].strip():
        return FinalAnswer(hashes[-1].strip(), "hashes")
    phrases = [_clause(m.group("ans").strip()) for m in _ANSWER_PHRASE.finditer(text)]
    # "The answer is as follows:" announces an answer on the next lines; it is not one.
    phrases = [p for p in phrases if p and not p.endswith(":")]
    if phrases:
        return FinalAnswer(phrases[-1], "phrase")
    return None


def final_answer(text: str) -> FinalAnswer | None:
    """The response's final answer: its explicit answer (boxed, ####, "the answer is"), else its
    last non-empty line; None for an empty response."""
    if not text or not text.strip():
        return None
    found = _explicit(text)
    if found is not None:
        return found
    return FinalAnswer(text.strip().splitlines()[-1].strip(), "line")


def extract_final_answer(text: str) -> str | None:
    """The explicit final answer of `text` (boxed, ####, "the answer is"), or None if it states none."""
    found = _explicit(text) if text else None
    return found.text if found else None


# ------------------------------------------------------------------------------- plain numbers


def _clean_latex(text: str) -> str:
    """Rewrite the LaTeX that wraps numbers into plain text: fractions, \\text{}, spacing, degrees."""
    text = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    text = re.sub(r"\\(?:text|mathrm|textbf|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", text)
    text = text.replace("\\,", "").replace("\\!", "").replace("\\ ", " ").replace("{,}", ",")
    text = text.replace("\\left", "").replace("\\right", "").replace("\\$", "$").replace("\\%", "%")
    text = re.sub(r"\^\s*\{?\\circ\}?|\u00b0", " degrees", text)
    return text


def _to_float(match: re.Match, *, signed: bool) -> tuple[float, bool] | None:
    """(value, is_percent) for one regex match of `_NUMBER`."""
    try:
        value = float(match.group("num").replace(",", ""))
        if match.group("den") is not None:
            den = float(match.group("den"))
            if den == 0:
                return None
            value /= den
    except ValueError:
        return None
    signs = ((match.group("sign") or "") if signed else "") + (match.group("sign2") or "")
    if signs.count("-") + signs.count("\u2212") == 1:
        value = -value
    if not math.isfinite(value):
        return None
    return value, bool(match.group("pct"))


def _number_spans(cleaned: str) -> list[tuple[re.Match, tuple[float, bool]]]:
    out = []
    for m in _NUMBER.finditer(cleaned):
        # A sign glued to a preceding word or number is an operator ("3-5"), not a sign.
        glued = m.group("sign") is not None and m.start() > 0 and cleaned[m.start() - 1].isalnum()
        parsed = _to_float(m, signed=not glued)
        if parsed is not None:
            out.append((m, parsed))
    return out


def _numbers(text: str) -> list[tuple[float, bool]]:
    """Every number in `text`, in order, as (value, is_percent)."""
    return [v for _, v in _number_spans(_clean_latex(unicodedata.normalize("NFKC", text)))]


def parse_number(text: str, *, last: bool = True) -> float | None:
    """The number a short answer string states (its last number, or its first with last=False).

    ``"$1,000.00"`` -> 1000.0, ``"\\frac{3}{4}"`` -> 0.75, ``"-5 km"`` -> -5.0, ``"25%"`` -> 25.0.
    Returns None when there is no number.
    """
    found = _numbers(text)
    if not found:
        return None
    return (found[-1] if last else found[0])[0]


def plain_number(answer: FinalAnswer) -> tuple[float, bool] | None:
    """(value, is_percent) when the final answer is a plain number, else None.

    Plain: one number, with at most currency, thousands commas, a percent sign, words (units)
    around it and a ``name =`` before it (the value after the last ``=`` is the answer: ``3 + 5 =
    8``). A final *line* may be a sentence with several numbers and no other maths ("so she has 8
    apples"): its last number. Anything else (``\\pi/2``, ``2\\sqrt{2}``, ``(1, 2)``, ``2x``,
    ``5, 7`` in a box) is not plain.
    """
    text = _clean_latex(unicodedata.normalize("NFKC", answer.text)).replace("$$", " ")
    text = text.replace("\\(", " ").replace("\\)", " ").replace("\\[", " ").replace("\\]", " ")
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    text = text.strip().rstrip(".")
    spans = _number_spans(text)
    if not spans or _GLUED_VARIABLE.search(text):
        return None
    rest, pos = "", 0
    for m, _ in spans:
        rest, pos = rest + text[pos : m.start()], m.end()
    rest += text[pos:]
    if _MATH_LEFT.search(rest) or any(_binary_sign(text, m) for m, _ in spans):
        return None
    if len(spans) > 1 and answer.source != "line":
        return None
    return spans[-1][1]


def _binary_sign(text: str, m: re.Match) -> bool:
    """A sign is an operator, not part of the number, when it follows a number or a bracket ("2 - 1"),
    touches a word ("x+1", "3-5") or follows a lone letter, a variable ("x - 1")."""
    if not m.group("sign"):
        return False
    glued, before = text[: m.start()], text[: m.start()].rstrip()
    return bool(before) and (
        before[-1].isdigit()
        or before[-1] in ")]}"
        or glued[-1].isalnum()
        or re.search(r"(?:^|[^A-Za-z])[A-Za-z]$", before) is not None
    )


def reference_value(reference: Reference) -> float | None:
    """The number a reference answer states when it is a plain number, else None.

    A GSM8K-style solution ending in ``#### 72`` yields 72; ``"1,000"`` 1000; ``"B"``, ``"Paris"``,
    ``"\\pi/2"`` and ``"(1, 2)"`` are not plain numbers.
    """
    if isinstance(reference, bool):
        return float(reference)
    if isinstance(reference, int | float):
        return float(reference) if math.isfinite(reference) else None
    found = _explicit(reference)
    answer = found if found is not None else FinalAnswer(reference.strip(), "boxed")  # one number only
    got = plain_number(answer)
    return None if got is None or got[1] else got[0]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(1.0, abs(a), abs(b))


def _fmt(x: float) -> str:
    return f"{x:.10g}"


# ------------------------------------------------------------------------------- text


def normalise_text(text: str) -> str:
    """Lower case, LaTeX text wrappers and articles dropped, whitespace collapsed, brackets and
    sentence punctuation removed where they touch a word's edge; every other symbol kept."""
    text = _clean_latex(unicodedata.normalize("NFKC", text)).lower().replace("$", " ")
    text = re.sub(r"\b(?:a|an|the)\b", " ", text)
    text = re.sub(rf"(?:(?<=\s)|^){_WRAP}|{_WRAP}(?=\s|$)", " ", text)
    return " ".join(text.split())


def _looks_textual(reference: str) -> bool:
    """Words without any maths: compared as text under `auto` ("Paris", "B", "(C)", "true")."""
    cleaned = _clean_latex(unicodedata.normalize("NFKC", reference)).strip()
    return bool(cleaned) and bool(_TEXT_ONLY.match(cleaned)) and any(c.isalpha() for c in cleaned)


# ------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """One answer check: `correct`, the `method` that decided (numeric, math, exact) and why."""

    correct: bool
    reason: str
    method: str
    timed_out: bool = False

    @property
    def value(self) -> float:
        return 1.0 if self.correct else 0.0


def _numeric_verdict(answer: FinalAnswer, ref: float) -> Verdict | None:
    got = plain_number(answer)
    if got is None:
        return None
    value, is_pct = got
    ok = _close(value, ref) or (is_pct and _close(value / 100.0, ref))
    shown = f"{_fmt(value)}%" if is_pct else _fmt(value)
    return Verdict(ok, f"numeric: {shown} {'==' if ok else '!='} {_fmt(ref)}", "numeric")


def _exact_verdict(answer: FinalAnswer, reference: str) -> Verdict:
    want = normalise_text(reference)
    if not want:
        raise ValueError("empty reference answer")
    got = normalise_text(answer.text)
    # "(B) because ..." still answers B: the reference may be the answer's first word(s).
    ok = got == want or got.startswith(want + " ")
    return Verdict(ok, f"exact: {got[:60]!r} {'==' if ok else '!='} {want[:60]!r}", "exact")


def _math_input(text: str, source: str) -> str:
    """The string handed to math-verify's parser: LaTeX in math mode when it looks like maths,
    the text as is (its own extraction reads it) when it is prose."""
    text = text.strip().rstrip(".").strip()
    if source == "boxed" or not text:
        return f"${text}$"
    if "$" in text or "\\(" in text or "\\[" in text:
        return text
    words = re.findall(r"[A-Za-z]{3,}", text)
    return text if any(w.lower() not in _MATH_WORDS for w in words) else f"${text}$"


def _reference_math(reference: Reference) -> str:
    if not isinstance(reference, str):
        return f"${_fmt(float(reference))}$"
    if "$" in reference:
        return reference
    found = _explicit(reference)
    return _math_input(found.text, found.source) if found else _math_input(reference, "boxed")


class _Plan:
    """What one check needs: a verdict already, or a math-verify call on (gold, answer)."""

    __slots__ = ("verdict", "gold", "answer", "shown")

    def __init__(self, verdict: Verdict | None = None, gold: str = "", answer: str = "", shown: str = ""):
        self.verdict, self.gold, self.answer, self.shown = verdict, gold, answer, shown


# ------------------------------------------------------------------------------- the checker


class AnswerChecker:
    """Checks responses against reference answers with one checker (`numeric | math | exact | auto`).

    `check(response, reference) -> Verdict`; `check_many(responses, references) -> [Verdict]`
    sends every math item to the worker pool at once. A timeout is a Verdict with
    `correct=False, timed_out=True` and reason "timeout: ...".
    """

    def __init__(self, checker: Checker = "auto", *, timeout_s: float = DEFAULT_TIMEOUT_S):
        if checker not in CHECKERS:
            raise ValueError(f"unknown answer checker {checker!r}; expected one of {', '.join(CHECKERS)}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.checker = checker
        self.timeout_s = float(timeout_s)

    @property
    def key(self) -> str:
        return answers_key(self.checker)

    def check(self, response: str, reference: Reference) -> Verdict:
        return self.check_many([response], [reference])[0]

    def check_many(self, responses: Sequence[str], references: Sequence[Reference]) -> list[Verdict]:
        if len(responses) != len(references):
            raise ValueError(f"{len(responses)} responses but {len(references)} references")
        plans = [self._plan(r or "", ref) for r, ref in zip(responses, references, strict=True)]
        todo = [p for p in plans if p.verdict is None]
        for p, status in zip(todo, run_math([(p.gold, p.answer) for p in todo], self.timeout_s), strict=True):
            p.verdict = _math_verdict(status, p.shown, self.timeout_s)
        return [p.verdict for p in plans]  # type: ignore[misc]

    def _plan(self, response: str, reference: Reference) -> _Plan:
        if reference is None or (isinstance(reference, str) and not reference.strip()):
            raise ValueError("empty reference answer")
        answer = final_answer(response)
        if answer is None:
            return _Plan(Verdict(False, "no final answer (empty response)", "none"))
        kind = self.checker
        ref_num = reference_value(reference) if kind in ("auto", "numeric") else None
        if kind == "auto":
            if ref_num is not None:
                kind = "numeric"
            elif isinstance(reference, str) and _looks_textual(reference):
                kind = "exact"
            else:
                kind = "math"
        if kind == "numeric":
            if ref_num is None:
                return _Plan(
                    Verdict(
                        False, f"numeric: reference {str(reference)[:40]!r} is not a plain number", "numeric"
                    )
                )
            verdict = _numeric_verdict(answer, ref_num)
            if verdict is not None:
                return _Plan(verdict)
            if self.checker == "numeric":
                return _Plan(
                    Verdict(
                        False, f"numeric: final answer {answer.text[:60]!r} is not a plain number", "numeric"
                    )
                )
            if answer.source == "line" and not _numbers(answer.text) and not _MATH_LEFT.search(answer.text):
                return _Plan(
                    Verdict(False, f"numeric: no number in the last line {answer.text[:60]!r}", "numeric")
                )
        if kind == "exact":
            return _Plan(_exact_verdict(answer, str(reference)))
        shown = f"{answer.text[:60]!r} vs {str(reference)[:60]!r}"
        return _Plan(
            gold=_reference_math(reference), answer=_math_input(answer.text, answer.source), shown=shown
        )


def _math_verdict(status: str, shown: str, timeout_s: float) -> Verdict:
    if status == "timeout":
        return Verdict(
            False, f"timeout: math check took over {timeout_s:g} s ({shown})", "math", timed_out=True
        )
    return Verdict(status == "equal", f"math: {status}: {shown}", "math")


def answers_key(checker: Checker = "auto") -> str:
    """Store key of answer scores: the checker, this module's verdict version and, where it is
    used, math-verify's version, so changing any of them re-scores answers and nothing else."""
    if checker not in CHECKERS:
        raise ValueError(f"unknown answer checker {checker!r}; expected one of {', '.join(CHECKERS)}")
    key = f"answers:{checker}@{CHECKER_VERSION}"
    return key if checker in ("numeric", "exact") else f"{key}+math-verify-{version('math-verify')}"


def check_answer(
    response: str, reference: Reference, checker: Checker = "auto", *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Verdict:
    """One verdict: ``check_answer("\\boxed{(2,1)}", "(1,2)").correct`` is False."""
    return AnswerChecker(checker, timeout_s=timeout_s).check(response, reference)


def answer_matches(response: str, reference: Reference, checker: Checker = "auto") -> bool:
    return check_answer(response, reference, checker).correct


class AnswerScorer:
    """Quality = 1.0 when a response's final answer matches the prompt's reference, else 0.0."""

    kind = "answers"

    def __init__(self, checker: Checker = "auto", *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.checker = AnswerChecker(checker, timeout_s=timeout_s)
        self.key = self.checker.key

    def verdicts(
        self, responses: Sequence[str], references: Sequence[Reference | None] | None
    ) -> list[Verdict]:
        if references is None or len(references) != len(responses):
            raise ValueError("the answers scorer needs one reference answer per response")
        for i, ref in enumerate(references):
            if ref is None or (isinstance(ref, str) and not ref.strip()):
                raise ValueError(f"response {i} has no reference answer; use quality 'auto' to fall back")
        return self.checker.check_many(responses, references)  # type: ignore[arg-type]

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[Reference | None] | None = None,
    ) -> list[float]:
        return [v.value for v in self.verdicts(responses, references)]
