"""Property-based tests of the prompt readers (JSONL, CSV, Parquet): files made of valid rows,
duplicates and corrupted rows in any order, with or without a byte-order mark, LF or CRLF, blank
lines, gzip. Whatever the mix: every distinct valid prompt is read exactly once, in file order, with
its line and answer; every duplicate is reported with its line; every bad row is reported with its
line and kind; and the only exception is `PromptSetError`."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persyn.prompts import PromptSetError, load_prompts, normalise_text

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Prompt text: letters, digits, punctuation, spaces, accents, CJK and emoji; NUL and other control
# characters are left out (no editor writes them into a prompt). CSV cells may span lines.
_chars = st.characters(
    codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="\u2028\u2029\x85"
)
TEXT = st.text(_chars, min_size=1, max_size=30).filter(lambda t: t.strip())
MULTILINE = st.lists(TEXT, min_size=1, max_size=3).map("\n".join)
ANSWER = st.one_of(st.none(), TEXT, st.integers(-1000, 10**6))


@dataclass
class Expected:
    """What the reader must find. Lines count from 1 (JSONL, CSV: the record's first line;
    Parquet: the row number)."""

    prompts: list[tuple[int, str, str | None]] = field(default_factory=list)  # line, text, answer
    duplicates: list[int] = field(default_factory=list)  # lines merged into an earlier prompt
    bad: list[tuple[int, str]] = field(default_factory=list)  # line, kind
    first_line: dict[str, int] = field(default_factory=dict)  # normalised text -> line

    def valid(self, line: int, text: str, answer) -> None:
        answer = None if answer is None else str(answer)
        norm = normalise_text(text)
        if norm in self.first_line:  # a duplicate: merged, keeping an answer only it had
            self.duplicates.append(line)
            i = next(i for i, p in enumerate(self.prompts) if p[0] == self.first_line[norm])
            if self.prompts[i][2] is None and answer is not None:
                self.prompts[i] = (self.prompts[i][0], self.prompts[i][1], answer)
            return
        self.first_line[norm] = line
        self.prompts.append((line, text, answer))

    def new_text(self, strategy):
        """A prompt unlike every earlier one (duplicates are drawn on purpose, not by chance)."""
        return strategy.filter(lambda t: normalise_text(t) not in self.first_line)

    def answer_of(self, text: str):
        line = self.first_line.get(normalise_text(text))
        return next((p[2] for p in self.prompts if p[0] == line), None)


def _duplicate_answer(draw, exp: Expected, text: str):
    """A copy of an earlier prompt: the same answer, none, or (if the prompt has none yet) a new one
    (two different answers are a conflict, tested elsewhere)."""
    known = exp.answer_of(text)
    choices = [None, known] if known is not None else [None, draw(ANSWER)]
    return draw(st.sampled_from(choices))


# ----------------------------------------------------------------------------- JSONL


@st.composite
def jsonl_files(draw):
    exp, lines = Expected(), []
    ascii_only = draw(st.booleans())
    for _ in range(draw(st.integers(0, 25))):
        line = len(lines) + 1
        kind = draw(st.sampled_from(["valid", "valid", "valid", "duplicate", "blank", "json",
                                     "not_object", "missing_prompt", "empty_prompt", "not_string",
                                     "bad_answer"]))  # fmt: skip
        if kind == "duplicate" and not exp.prompts:
            kind = "valid"
        if kind in ("valid", "duplicate"):
            if kind == "valid":
                text, answer = draw(exp.new_text(TEXT)), draw(ANSWER)
            else:
                text = draw(st.sampled_from([p[1] for p in exp.prompts]))
                # an equal prompt may differ in outer whitespace and line ends
                text = draw(st.sampled_from([text, f"  {text}\n", text.replace("\n", "\r\n")]))
                answer = _duplicate_answer(draw, exp, text)
            row = {"prompt": text, **({"answer": answer} if answer is not None else {})}
            if draw(st.booleans()):
                row["meta"] = {"n": draw(st.integers())}
            lines.append(json.dumps(row, ensure_ascii=ascii_only))
            exp.valid(line, text, answer)
            continue
        if kind == "blank":
            lines.append(draw(st.sampled_from(["", "   ", "\t"])))
            continue
        bad = {
            "json": lambda: json.dumps({"prompt": draw(TEXT)})[:-1],  # the closing brace is lost
            "not_object": lambda: json.dumps(draw(st.sampled_from([[draw(TEXT)], 7, draw(TEXT)]))),
            "missing_prompt": lambda: json.dumps({"question": draw(TEXT)}),
            "empty_prompt": lambda: json.dumps({"prompt": draw(st.sampled_from(["", " ", "\n\t"]))}),
            "not_string": lambda: json.dumps({"prompt": draw(st.sampled_from([3, 2.5, {"a": 1}, True]))}),
            "bad_answer": lambda: json.dumps({"prompt": draw(TEXT), "answer": [1, 2]}),
        }[kind]()
        lines.append(bad)
        exp.bad.append((line, kind))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    data = "".join(x + newline for x in lines).encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, draw(st.booleans()), exp


@SETTINGS
@given(jsonl_files())
def test_jsonl_reader_reads_every_valid_row_once_and_reports_every_bad_one(case):
    data, zipped, exp = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("p.jsonl.gz" if zipped else "p.jsonl")
        path.write_bytes(gzip.compress(data) if zipped else data)
        _check(path, exp)


# ----------------------------------------------------------------------------- CSV


@st.composite
def csv_files(draw):
    exp, records = Expected(), []
    header = ["prompt", "answer", "topic"]
    line = 1  # the header
    for _ in range(draw(st.integers(0, 20))):
        kind = draw(st.sampled_from(["valid", "valid", "valid", "duplicate", "blank", "empty_prompt",
                                     "csv_shape"]))  # fmt: skip
        if kind == "duplicate" and not exp.prompts:
            kind = "valid"
        start = line + 1
        if kind == "blank":
            records.append(None)
            line += 1
            continue
        if kind in ("valid", "duplicate"):
            if kind == "valid":
                text, answer = draw(exp.new_text(st.one_of(TEXT, MULTILINE))), draw(ANSWER)
            else:
                text = draw(st.sampled_from([p[1] for p in exp.prompts]))
                answer = _duplicate_answer(draw, exp, text)
            cells = [text, "" if answer is None else str(answer), draw(TEXT)]
            exp.valid(start, text, answer)
        elif kind == "empty_prompt":
            cells = [draw(st.sampled_from(["", " "])), "1", "x"]
            exp.bad.append((start, kind))
        else:
            cells = [draw(TEXT), "1", "x", "one too many"]
            exp.bad.append((start, kind))
        records.append(cells)
        line += 1 + sum(c.count("\n") for c in cells)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    for cells in records:
        if cells is None:
            out.write(newline)
        else:
            writer.writerow(cells)
    data = out.getvalue().encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data, exp


@SETTINGS
@given(csv_files())
def test_csv_reader_reads_every_valid_row_once_and_reports_every_bad_one(case):
    data, exp = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.csv"
        path.write_bytes(data)
        _check(path, exp)


# ----------------------------------------------------------------------------- Parquet


@st.composite
def parquet_files(draw):
    exp, prompts, answers = Expected(), [], []
    for row in range(1, draw(st.integers(0, 30)) + 1):
        kind = draw(st.sampled_from(["valid", "valid", "valid", "duplicate", "missing_prompt",
                                     "empty_prompt"]))  # fmt: skip
        if kind == "duplicate" and not exp.prompts:
            kind = "valid"
        if kind == "valid":
            text, answer = draw(exp.new_text(TEXT)), draw(st.one_of(st.none(), TEXT))
            exp.valid(row, text, answer)
        elif kind == "duplicate":
            text = draw(st.sampled_from([p[1] for p in exp.prompts]))
            answer = _duplicate_answer(draw, exp, text)
            answer = None if answer is None else str(answer)
            exp.valid(row, text, answer)
        else:
            text, answer = (None if kind == "missing_prompt" else " "), None
            exp.bad.append((row, kind))
        prompts.append(text)
        answers.append(answer)
    table = pa.table({"prompt": pa.array(prompts, pa.string()), "answer": pa.array(answers, pa.string())})
    return table, draw(st.integers(1, 8)), exp


@SETTINGS
@given(parquet_files())
def test_parquet_reader_reads_every_valid_row_once_and_reports_every_bad_one(case):
    table, row_group, exp = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.parquet"
        pq.write_table(table, path, row_group_size=row_group)
        _check(path, exp)


# ----------------------------------------------------------------------------- the property


def _check(path: Path, exp: Expected) -> None:
    kw = {"answer_field": "answer"}
    try:
        ps = load_prompts(path, skip_bad_rows=True, **kw)
    except PromptSetError as err:  # allowed only when nothing valid is left, and it says why
        assert not exp.prompts, str(err)
        assert "no usable prompt" in str(err)
        assert [(b.line, b.kind) for b in err.bad_rows] == exp.bad
        return
    got = [(int(p.source.rsplit(":", 1)[1]), p.text, p.answer) for p in ps.prompts]
    assert got == exp.prompts
    assert sorted(line for g in ps.report.duplicates for line in g.duplicate_lines) == exp.duplicates
    assert [(b.line, b.kind) for b in ps.report.bad_rows] == exp.bad
    if exp.bad:  # refused without skip_bad_rows, naming every bad row's line
        try:
            load_prompts(path, **kw)
        except PromptSetError as err:
            assert [(b.line, b.kind) for b in err.bad_rows] == exp.bad
            assert f"{ps.report.unit} {exp.bad[0][0]}:" in str(err)
        else:
            raise AssertionError("bad rows were accepted without skip_bad_rows")
