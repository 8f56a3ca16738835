"""The row filters every synthesis pipeline has: which teacher responses a user would delete by
hand before training on them. Pure functions of (prompt, response); the `filter` stage
(stages/filter.py) runs them over the run's responses and keeps each verdict in the store.

    verdict = check_response(prompt, response_text, finish_reason, settings, has_reference=False)
    verdict.dropped_by       # ["repetition"]: the filters that drop it, in FILTERS order ([] = kept)
    verdict.measures         # the numbers behind it (dup n-gram fractions, overlap...)

- cut: a response that ended at the token limit (`finish_reason == "length"`);
- empty: an empty or whitespace-only response;
- repetition: a loop: a span of `ngram` words said at least `min_repeats` times, with the repeated
  spans covering more than `max_dup_fraction` of the text (Gopher's duplicate n-gram character
  fraction), or one character repeated `max_char_run` times;
- echo: a response that mostly copies a stretch of the prompt back, verbatim;
- shape: the wrong shape where checkable: no code for a prompt that asks for code; a bare number
  for an open instruction without a reference answer.

Repetition measures coverage as Gopher does (Rae et al. 2021, "Scaling Language Models", Table
A1; DataTrove's `GopherRepetitionFilter`): the n-grams of the word sequence, counted; the
characters of the words inside any n-gram that occurs more than once, each word counted once, over
the characters of all words. Gopher's *thresholds* (0.15 for 5-grams down to 0.10 for 10-grams) are
not used: they were set for web pages, where any repeated sentence is suspect. A short answer that
restates its question's quantities ("the number of lemons in each basket", twice) passes 0.15 at
5-grams while being exactly the answer a user wants; with those thresholds the filter dropped 29 of
Qwen's 50 routed rows in an evidence run, all of them read and fine. A loop says the same thing
over and over, so the rule asks for a span said at least three times (`min_repeats`) covering most
of the text: every loop in that run's 288 responses (`Answer:` x 204, `Raindrops fall,` x 155, one
explanation said three times) repeats a 10-word span 3 to 204 times, and no kept answer repeats one
more than twice. DataTrove is not a dependency: its filter needs NLTK's punkt data for its word
tokenizer (not available offline, and not needed for this one measure), and its other measures
(duplicate lines, top 2-4-gram shares) are tuned for web pages as well. Words are `\\w+` runs, so
code is measured too.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Filter names, in the order they are checked (and shown).
FILTERS = ("cut", "empty", "repetition", "echo", "shape")
#: Bump when a measure changes: stored verdicts are keyed by it, so they are computed again.
FILTERS_VERSION = 2  # 2: loops by repeated spans (not Gopher's web thresholds), echoes by verbatim runs

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class FilterSettings:
    """What `check_response` checks (config: the `filters` section, `config.FiltersConfig`)."""

    active: tuple[str, ...] = FILTERS
    min_words: int = 20
    max_char_run: int = 24
    ngram: int = 10
    min_repeats: int = 3
    max_dup_fraction: float = 0.5
    echo_min_overlap: float = 0.7
    echo_min_length_ratio: float = 0.5

    @classmethod
    def from_config(cls, cfg: Any) -> FilterSettings:
        return cls(
            active=tuple(cfg.active()),
            min_words=cfg.repetition.min_words,
            max_char_run=cfg.repetition.max_char_run,
            ngram=cfg.repetition.ngram,
            min_repeats=cfg.repetition.min_repeats,
            max_dup_fraction=cfg.repetition.max_dup_fraction,
            echo_min_overlap=cfg.echo.min_overlap,
            echo_min_length_ratio=cfg.echo.min_length_ratio,
        )


@dataclass
class Verdict:
    dropped_by: list[str] = field(default_factory=list)
    measures: dict[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return not self.dropped_by


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def dup_ngram_char_fraction(ws: list[str], n: int) -> float:
    """Gopher's duplicate n-gram character fraction: the characters of the words covered by an
    n-gram that occurs more than once (each word once), over the characters of all words."""
    total = sum(len(w) for w in ws)
    if total == 0 or len(ws) < n:
        return 0.0
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    counts = Counter(grams)
    covered = [False] * len(ws)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            for j in range(i, i + n):
                covered[j] = True
    return sum(len(w) for w, c in zip(ws, covered, strict=True) if c) / total


def max_ngram_repeats(ws: list[str], n: int) -> int:
    """How often the most frequent word n-gram occurs (0 for a text shorter than n words)."""
    counts = Counter(tuple(ws[i : i + n]) for i in range(len(ws) - n + 1))
    return max(counts.values(), default=0)


def longest_char_run(text: str) -> int:
    """The longest run of one repeated non-space character (`100000000...`, `!!!!!!`)."""
    best = run = 0
    prev = ""
    for ch in text:
        run = run + 1 if ch == prev and not ch.isspace() else 1
        prev = ch
        best = max(best, run)
    return best


def repetition(text: str, settings: FilterSettings) -> tuple[bool, dict[str, Any]]:
    ws = words(text)
    run = longest_char_run(text)
    measures: dict[str, Any] = {"char_run": run}
    loop = run >= settings.max_char_run
    if len(ws) >= settings.min_words:
        n = settings.ngram
        frac, repeats = dup_ngram_char_fraction(ws, n), max_ngram_repeats(ws, n)
        measures[f"dup_{n}gram"], measures[f"max_repeats_{n}gram"] = round(frac, 4), repeats
        loop = loop or (repeats >= settings.min_repeats and frac > settings.max_dup_fraction)
    return loop, measures


def echo_overlap(prompt: str, response: str) -> float:
    """The share of the response's words inside its longest verbatim run of the prompt's words: 1.0
    for a response that copies a stretch of the prompt back. A response that reorders, numbers or
    rewords what the prompt says (an extraction's list of steps) is broken into short runs and
    scores low, though most of its words come from the prompt."""
    from difflib import SequenceMatcher

    rw, pw = words(response), words(prompt)
    if not rw:
        return 0.0
    run = SequenceMatcher(None, pw, rw, autojunk=False).find_longest_match(0, len(pw), 0, len(rw))
    return run.size / len(rw)


def is_echo(prompt: str, response: str, settings: FilterSettings) -> tuple[bool, dict[str, Any]]:
    overlap = echo_overlap(prompt, response)
    ratio = len(words(response)) / max(len(words(prompt)), 1)
    echo = overlap >= settings.echo_min_overlap and ratio >= settings.echo_min_length_ratio
    return echo, {"echo_overlap": round(overlap, 4), "length_ratio": round(ratio, 4)}


# A prompt that asks for code: "write a (Python) function / program / script / class / SQL query...".
_ASKS_CODE = re.compile(
    r"\b(write|implement|create|give me|show me|provide|code)\b[^.?!\n]{0,60}?"
    r"\b(function|program|script|class|method|snippet|sql|query|regex|regular expression|code|one-liner)\b",
    re.IGNORECASE,
)
_CODE_LANG = re.compile(
    r"\b(python|javascript|typescript|java|c\+\+|c#|rust|go|golang|bash|shell|sql|ruby|php|kotlin|swift)\b",
    re.IGNORECASE,
)
# What code looks like in an answer: a fence, a definition, a statement or an operator line.
_LOOKS_CODE = re.compile(
    r"```|^\s*(def|class|import|from|function|const|let|var|public|private|return|for|while|if|"
    r"SELECT|select|#include|fn|func|package)\b|[{};]\s*$|\w+\s*\(.*\)\s*[:{]?\s*$|=>|==|\w\s*=\s*\S",
    re.MULTILINE,
)
# A bare number: "42", "-3.5", "The answer is 7.", "Answer: 12".
_BARE_NUMBER = re.compile(
    r"^\s*(the\s+(final\s+)?answer\s+is|answer\s*:)?\s*[-+]?\$?\d[\d,]*(\.\d+)?\s*%?\s*\.?\s*$", re.IGNORECASE
)
# A prompt that may well want a number back (then a bare number is a fine shape).
_ASKS_NUMBER = re.compile(
    r"\b(how (many|much|long|far|old|often)|calculate|compute|what is the (sum|total|product|number|value)|"
    r"count|estimate|percentage|\d+\s*[-+*/x×]\s*\d+|what(?:'s| is| are)\b[^?.]*\d)\b",
    re.IGNORECASE,
)


def asks_for_code(prompt: str) -> bool:
    return bool(_ASKS_CODE.search(prompt)) or (
        bool(_CODE_LANG.search(prompt))
        and bool(re.search(r"\b(function|script|program|code)\b", prompt, re.I))
    )


def wrong_shape(prompt: str, response: str, *, has_reference: bool) -> tuple[bool, dict[str, Any]]:
    """No code at all for a prompt that asks for code; a bare number for an open instruction
    that has no reference answer and does not ask for a number."""
    if asks_for_code(prompt) and not _LOOKS_CODE.search(response):
        return True, {"shape": "no code for a code request"}
    if not has_reference and _BARE_NUMBER.match(response) and not _ASKS_NUMBER.search(prompt):
        return True, {"shape": "a bare number for an open instruction"}
    return False, {}


def check_response(
    prompt: str,
    response: str | None,
    finish_reason: str | None,
    settings: FilterSettings,
    *,
    has_reference: bool = False,
) -> Verdict:
    """Every active filter on one response (see the module docstring)."""
    v = Verdict()
    text = response or ""
    on = set(settings.active)
    if "cut" in on and finish_reason == "length":
        v.dropped_by.append("cut")
    if not text.strip():
        if "empty" in on:
            v.dropped_by.append("empty")
        return v
    if "repetition" in on:
        loop, m = repetition(text, settings)
        v.measures.update(m)
        if loop:
            v.dropped_by.append("repetition")
    if "echo" in on:
        echo, m = is_echo(prompt, text, settings)
        v.measures.update(m)
        if echo:
            v.dropped_by.append("echo")
    if "shape" in on:
        bad, m = wrong_shape(prompt, text, has_reference=has_reference)
        v.measures.update(m)
        if bad:
            v.dropped_by.append("shape")
    return v
