"""Verifiable answers: does a response's final answer match the prompt's reference answer?

The paper scores math prompts by binary correctness of the final answer. Responses state their
answer in many ways, so matching has two steps:

1. find the *final answer* segment of a text, in order of how explicit it is:
   the last ``\\boxed{...}``, then the last GSM8K ``#### X`` line, then the last
   "answer is X" / "Answer: X" phrase, and for numeric references finally the last number;
2. compare: numerically when the reference is a number (``1,000``, ``1000.0``, ``$1,000``,
   ``\\frac{3}{4}``, ``3/4``, ``-5``, ``25%`` all parse), else as normalised text.

Choices (documented in docs/router.md): a percentage ``p%`` matches a reference of ``p`` or of
``p/100``; numbers compare with a relative tolerance of 1e-6; a decimal comma (``3,5``) is not
read as 3.5 (it is ambiguous with a thousands separator); number words ("five") are not parsed.
A response without a parseable answer scores 0.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

ANSWERS_KEY = "answers:v1"

# A number as people and models write it: optional sign and currency, thousands commas, decimals,
# scientific notation, an optional trailing percent sign. Order matters: the comma-grouped form
# first, so "1,000" is one number and "1,2" is two.
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
_REL_TOL = 1e-6


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), with nested braces balanced."""
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
    return None  # unbalanced: the model stopped mid-answer


def _clean_latex(text: str) -> str:
    """Rewrite the LaTeX that wraps numbers into plain text: fractions, \\text{}, spacing."""
    text = _FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text)
    text = re.sub(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}", r"\1", text)
    text = text.replace("\\,", "").replace("\\!", "").replace("\\ ", " ").replace("{,}", ",")
    text = text.replace("\\left", "").replace("\\right", "").replace("\\$", "$")
    return text


def _final_segment(text: str) -> tuple[str, str] | None:
    """(segment, kind) of the explicit final answer, kind one of boxed / hashes / phrase."""
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    hashes = _HASHES.findall(text)
    if hashes and hashes[-1].strip():
        return hashes[-1].strip(), "hashes"
    phrases = [m.group("ans").strip() for m in _ANSWER_PHRASE.finditer(text)]
    phrases = [p for p in phrases if p]
    if phrases:
        return phrases[-1], "phrase"
    return None


def extract_final_answer(text: str) -> str | None:
    """The segment of `text` that states its final answer, or None if it states none explicitly.

    Looks for (last occurrence wins): ``\\boxed{}``, ``#### X``, "answer is X" / "Answer: X".
    """
    found = _final_segment(text)
    return found[0] if found else None


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


def _numbers(text: str) -> list[tuple[float, bool]]:
    """Every number in `text`, in order, as (value, is_percent)."""
    cleaned = _clean_latex(unicodedata.normalize("NFKC", text))
    out = []
    for m in _NUMBER.finditer(cleaned):
        # A sign glued to a preceding word or number is an operator ("3-5"), not a sign.
        glued = m.group("sign") is not None and m.start() > 0 and cleaned[m.start() - 1].isalnum()
        parsed = _to_float(m, signed=not glued)
        if parsed is not None:
            out.append(parsed)
    return out


def parse_number(text: str, *, last: bool = True) -> float | None:
    """The number a short answer string states (its last number, or its first with last=False).

    ``"$1,000.00"`` -> 1000.0, ``"\\frac{3}{4}"`` -> 0.75, ``"-5 km"`` -> -5.0, ``"25%"`` -> 25.0.
    Returns None when there is no number.
    """
    found = _numbers(text)
    if not found:
        return None
    return (found[-1] if last else found[0])[0]


def _answer_number(text: str) -> tuple[float, bool] | None:
    """The final numeric answer of a response.

    In an explicit segment: the last number of ``\\boxed{x = 5}`` or ``#### 5``, but the *first*
    number after "the answer is" (a justification may follow: "is 8, since 3 + 5 = 8 not 9").
    Without one: the last number in the whole text.
    """
    found_segment = _final_segment(text)
    if found_segment is not None:
        segment, kind = found_segment
        found = _numbers(segment)
        if found:
            return found[0] if kind == "phrase" else found[-1]
    found = _numbers(text)
    return found[-1] if found else None


def _normalise_text(text: str) -> str:
    text = _clean_latex(unicodedata.normalize("NFKC", text)).lower()
    text = re.sub(r"\b(?:a|an|the)\b", " ", text)
    text = re.sub(r"[^\w]+", " ", text)
    return " ".join(text.split())


def reference_value(reference: str | float | int) -> float | None:
    """The number a reference answer states, or None if it is not numeric.

    A GSM8K-style full solution ending in ``#### 72`` yields 72; a plain string is numeric only
    if it is a single number (so "B" or "Paris" stay text).
    """
    if isinstance(reference, bool):
        return float(reference)
    if isinstance(reference, int | float):
        return float(reference) if math.isfinite(reference) else None
    segment = extract_final_answer(reference)
    found = _numbers(segment if segment is not None else reference)
    if len(found) == 1 or (segment is not None and found):
        return found[-1][0]
    return None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(1.0, abs(a), abs(b))


def answer_matches(response: str, reference: str | float | int) -> bool:
    """True when the response's final answer equals the reference (numerically where it is a
    number, else as normalised text)."""
    ref_num = reference_value(reference)
    if ref_num is not None:
        got = _answer_number(response or "")
        if got is None:
            return False
        value, is_pct = got
        return _close(value, ref_num) or (is_pct and _close(value / 100.0, ref_num))
    ref_text = _normalise_text(str(reference))
    if not ref_text:
        raise ValueError("empty reference answer")
    segment = extract_final_answer(response or "")
    if segment is None:
        lines = [ln for ln in (response or "").strip().splitlines() if ln.strip()]
        segment = lines[-1] if lines else ""
    got = _normalise_text(segment)
    # "(B) because ..." still answers B: accept the reference as the segment's first word(s).
    return got == ref_text or got.startswith(ref_text + " ")


class AnswerScorer:
    """Quality = 1.0 when a response's final answer matches the prompt's reference, else 0.0."""

    key = ANSWERS_KEY
    kind = "answers"

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        references: Sequence[str | float | int | None] | None = None,
    ) -> list[float]:
        if references is None or len(references) != len(responses):
            raise ValueError("the answers scorer needs one reference answer per response")
        out = []
        for i, (resp, ref) in enumerate(zip(responses, references, strict=True)):
            if ref is None or (isinstance(ref, str) and not ref.strip()):
                raise ValueError(f"response {i} has no reference answer; use quality 'auto' to fall back")
            out.append(1.0 if answer_matches(resp, ref) else 0.0)
        return out
