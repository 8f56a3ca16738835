"""Prompt sets: every format, every kind of bad row, duplicates, ids, context limits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from persyn.prompts import (
    SHOWN_BAD_ROWS,
    Prompt,
    PromptSetError,
    TokenLimit,
    check_lengths,
    load_prompts,
    normalise_text,
    text_id,
)


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- ids and basics


def test_text_id_is_stable_and_normalised():
    assert text_id("What is 2+2?") == text_id("  What is 2+2?\n")
    assert text_id("a\r\nb") == text_id("a\nb")
    assert text_id("caf\u00e9") == text_id("cafe\u0301")  # NFC: composed and decomposed é
    assert text_id("def f():\n    return 1") != text_id("def f():\n  return 1")  # indentation is meaning
    assert len(text_id("x")) == 16 and text_id("x") == text_id("x")
    assert normalise_text(" a\r\n") == "a"


def test_jsonl_basic(tmp_path):
    p = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "Hello there", "answer": 42, "topic": "greet"},
            {"prompt": "Second", "extra": {"k": [1, 2]}},
        ],
    )
    ps = load_prompts(p, answer_field="answer")
    assert [x.text for x in ps.prompts] == ["Hello there", "Second"]
    first = ps.prompts[0]
    assert first.id == text_id("Hello there")
    assert first.answer == "42"
    assert first.source == f"{p}:1"
    assert first.meta == {"topic": "greet"}
    assert ps.prompts[1].answer is None and ps.prompts[1].meta == {"extra": {"k": [1, 2]}}
    assert ps.report.n_prompts == 2 and ps.report.n_with_answer == 1 and not ps.report.bad_rows
    json.dumps(ps.report.to_dict())  # JSON-safe, for the run dir


def test_blank_lines_are_not_bad_rows(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "a"}\n\n   \n{"prompt": "b"}\n', encoding="utf-8")
    ps = load_prompts(p)
    assert len(ps) == 2 and ps.report.blank_lines == 2
    assert ps.prompts[1].source.endswith(":4")


def test_dotted_and_messages_fields(tmp_path):
    rows = [
        {"input": {"question": "Nested?"}, "gold": {"value": 7}},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "First user turn"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second"},
            ]
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}],
                }
            ]
        },
    ]
    p = write_jsonl(tmp_path / "p.jsonl", rows[:1])
    ps = load_prompts(p, prompt_field="input.question", answer_field="gold.value")
    assert ps.prompts[0].text == "Nested?" and ps.prompts[0].answer == "7"
    p2 = write_jsonl(tmp_path / "m.jsonl", rows[1:])
    ps2 = load_prompts(p2, prompt_field="messages")
    assert [x.text for x in ps2.prompts] == ["First user turn", "part one\npart two"]
    ps3 = load_prompts(p2, prompt_field="messages.0.content")
    assert [x.text for x in ps3.prompts] == ["Be brief.", "part one\npart two"]  # content parts joined
    p4 = write_jsonl(tmp_path / "n.jsonl", [{"messages": [{"role": "user", "content": 5}]}, {"messages": []}])
    with pytest.raises(PromptSetError) as ei:
        load_prompts(p4, prompt_field="messages")
    assert [b.kind for b in ei.value.bad_rows] == ["not_string", "not_string"]


def test_id_field(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"uid": 7, "prompt": "a"}, {"uid": "007", "prompt": "b"}])
    ps = load_prompts(p, id_field="uid")
    assert [x.id for x in ps.prompts] == ["7", "007"]
    assert ps.prompts[0].meta == {}


def test_limit_keeps_the_first_prompts(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(10)])
    ps = load_prompts(p, limit=3)
    assert [x.text for x in ps.prompts] == ["q0", "q1", "q2"] and ps.report.stopped_at_limit


# ----------------------------------------------------------------------------- bad rows


BAD_ROWS = [
    ('{"prompt": "fine"}', None),
    ('{"prompt": "broken', "json"),
    ("[1, 2, 3]", "not_object"),
    ('{"question": "wrong field"}', "missing_prompt"),
    ('{"prompt": null}', "missing_prompt"),
    ('{"prompt": ""}', "empty_prompt"),
    ('{"prompt": "   \\n "}', "empty_prompt"),
    ('{"prompt": 12}', "not_string"),
    ('{"prompt": ["a", "b"]}', "not_string"),
    ('{"prompt": [{"role": "system", "content": "only system"}]}', "no_user_turn"),
    ('{"prompt": "answer is a dict", "answer": {"x": 1}}', "bad_answer"),
    ('{"prompt": "answer is a bool", "answer": true}', "bad_answer"),
    ('{"prompt": "also fine", "answer": "3"}', None),
]


def test_every_bad_row_is_refused_with_line_and_reason(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [r for r, _ in BAD_ROWS])
    with pytest.raises(PromptSetError) as ei:
        load_prompts(p, answer_field="answer")
    err = ei.value
    expected = [(i + 1, kind) for i, (_, kind) in enumerate(BAD_ROWS) if kind]
    assert [(b.line, b.kind) for b in err.bad_rows] == expected
    msg = str(err)
    assert str(p) in msg and "line 2: invalid JSON" in msg and "skip_bad_rows" in msg
    assert "line 6: prompt field 'prompt' is empty" in msg


def test_skip_bad_rows_reports_them(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [r for r, _ in BAD_ROWS])
    ps = load_prompts(p, answer_field="answer", skip_bad_rows=True)
    assert [x.text for x in ps.prompts] == ["fine", "also fine"]
    assert ps.report.n_bad == sum(1 for _, k in BAD_ROWS if k)
    assert len(ps.report.empty_prompts) == 2
    d = ps.report.to_dict()
    assert d["bad_rows"][0] == {
        "line": 2,
        "kind": "json",
        "reason": d["bad_rows"][0]["reason"],
        "excerpt": '{"prompt": "broken',
    }
    assert "2 bad rows" not in ps.report.summary() and "bad rows skipped" in ps.report.summary()


def test_error_shows_first_rows_and_counts_the_rest(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", ['{"prompt": ""}'] * (SHOWN_BAD_ROWS + 5) + ['{"prompt": "ok"}'])
    with pytest.raises(PromptSetError) as ei:
        load_prompts(p)
    assert len(ei.value.bad_rows) == SHOWN_BAD_ROWS + 5
    assert "... and 5 more" in str(ei.value)


def test_id_problems(tmp_path):
    rows = [
        {"id": "a", "prompt": "one"},
        {"id": "a", "prompt": "two"},  # id reused for another text
        {"id": "", "prompt": "three"},
        {"prompt": "four"},  # no id
        {"id": 1.5, "prompt": "five"},
        {"id": "a", "prompt": "  one  "},  # same id, same text: a duplicate, not an error
    ]
    p = write_jsonl(tmp_path / "p.jsonl", rows)
    ps = load_prompts(p, id_field="id", skip_bad_rows=True)
    assert [(b.line, b.kind) for b in ps.report.bad_rows] == [
        (2, "id_conflict"),
        (3, "bad_id"),
        (4, "bad_id"),
        (5, "bad_id"),
    ]
    assert "already used at line 1" in ps.report.bad_rows[0].reason
    assert [x.id for x in ps.prompts] == ["a"]
    assert ps.report.duplicates[0].duplicate_lines == (6,)


def test_duplicates_are_merged_and_reported(tmp_path):
    rows = [
        {"prompt": "Same question", "answer": "1"},
        {"prompt": "Other"},
        {"prompt": "  Same question\n", "answer": "1"},
        {"prompt": "Same question", "answer": 1},
    ]
    p = write_jsonl(tmp_path / "p.jsonl", rows)
    ps = load_prompts(p, answer_field="answer")
    assert [x.text for x in ps.prompts] == ["Same question", "Other"]
    (g,) = ps.report.duplicates
    assert g.id == text_id("Same question") and g.kept_line == 1 and g.duplicate_lines == (3, 4)
    assert ps.report.n_duplicate_rows == 2 and "2 duplicate rows merged" in ps.report.summary()


def test_duplicate_with_other_answer_is_a_conflict(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "answer": "1"}, {"prompt": "Q", "answer": "2"}])
    with pytest.raises(PromptSetError, match="line 2: same prompt as line 1 with a different answer"):
        load_prompts(p, answer_field="answer")


def test_same_text_different_ids_merged(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "prompt": "Q"}, {"id": "y", "prompt": "Q"}])
    ps = load_prompts(p, id_field="id")
    assert [x.id for x in ps.prompts] == ["x"]
    assert ps.report.duplicates[0].duplicate_ids == ("y",)


def test_same_prompt_with_and_without_answer_is_merged_keeping_the_answer(tmp_path):
    rows = [
        {"prompt": "What is 6 x 7?"},
        {"prompt": "Other"},
        {"prompt": " What is 6 x 7? ", "answer": "42"},  # the later copy has the answer
        {"prompt": "Name a colour.", "answer": "red"},
        {"prompt": "Name a colour."},  # the earlier copy has it
    ]
    ps = load_prompts(write_jsonl(tmp_path / "p.jsonl", rows), answer_field="answer")
    assert [(x.text, x.answer) for x in ps.prompts] == [
        ("What is 6 x 7?", "42"),
        ("Other", None),
        ("Name a colour.", "red"),
    ]
    assert ps.prompts[0].source.endswith(":1")  # the first occurrence stays the prompt's origin
    assert [(g.kept_line, g.duplicate_lines, g.answer_line) for g in ps.report.duplicates] == [
        (1, (3,), 3),
        (4, (5,), 4),
    ]
    assert ps.report.n_with_answer == 2 and ps.report.to_dict()["answers_merged"] == 2
    assert "2 duplicate rows merged (2 keeping the answer only some copies had)" in ps.report.summary()


def test_a_row_id_on_two_prompts_is_refused_naming_both_lines(tmp_path):
    """Without id_field, ids come from the text, but a row's own `id` is still its provenance."""
    rows = [
        {"id": "q1", "prompt": "What is 6 x 7?"},
        {"id": "q2", "prompt": "Other"},
        {"id": "q1", "prompt": "What is 7 x 8?"},  # q1 again, another prompt
        {"id": "q2", "prompt": "Other"},  # q2 again, same prompt: a duplicate
        {"id": 3, "prompt": "Third"},
    ]
    p = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PromptSetError) as err:
        load_prompts(p)
    assert "line 3: id 'q1' (field 'id') is already used at line 1 for another text" in str(err.value)
    ps = load_prompts(p, skip_bad_rows=True)
    assert [x.text for x in ps.prompts] == ["What is 6 x 7?", "Other", "Third"]
    assert [(b.line, b.kind) for b in ps.report.bad_rows] == [(3, "id_conflict")]
    assert ps.report.duplicates[0].duplicate_lines == (4,)
    assert ps.prompts[0].id == text_id("What is 6 x 7?") and ps.prompts[0].meta == {"id": "q1"}


def test_windows_files_with_byte_order_mark_and_crlf(tmp_path):
    """What Notepad and Excel write: a UTF-8 byte-order mark, CRLF line ends."""
    rows = ['{"prompt": "caf\u00e9 au lait?", "answer": "1"}', "", '{"prompt": "Second"}']
    p = tmp_path / "win.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode("utf-8") + b"\r\n")
    ps = load_prompts(p, answer_field="answer")
    assert [x.text for x in ps.prompts] == ["caf\u00e9 au lait?", "Second"]
    assert ps.prompts[1].source.endswith(":3") and ps.report.blank_lines == 1
    c = tmp_path / "win.csv"
    c.write_bytes(b'\xef\xbb\xbfprompt,answer\r\n"Line one\r\nline two",7\r\nNext,\r\n')
    ps = load_prompts(c, answer_field="answer")
    assert [(x.text, x.answer) for x in ps.prompts] == [("Line one\r\nline two", "7"), ("Next", None)]
    assert ps.prompts[1].source.endswith(":4")
    gz = tmp_path / "win.jsonl.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    assert len(load_prompts(gz)) == 2


# ----------------------------------------------------------------------------- files and formats


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(PromptSetError, match="no such file"):
        load_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(PromptSetError, match="the file is empty"):
        load_prompts(tmp_path / "empty.jsonl")
    (tmp_path / "p.txt").write_text("hello")
    with pytest.raises(PromptSetError, match="cannot tell the format"):
        load_prompts(tmp_path / "p.txt")
    write_jsonl(tmp_path / "w.jsonl", [{"text": "a"}])
    with pytest.raises(PromptSetError, match="is the prompt field 'prompt' right"):
        load_prompts(tmp_path / "w.jsonl", skip_bad_rows=True)
    (tmp_path / "latin1.jsonl").write_bytes('{"prompt": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(PromptSetError, match="not UTF-8"):
        load_prompts(tmp_path / "latin1.jsonl")


def test_gzipped_jsonl_and_explicit_format(tmp_path):
    p = tmp_path / "p.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write('{"prompt": "zipped"}\n')
    assert load_prompts(p).prompts[0].text == "zipped"
    q = tmp_path / "prompts.data"
    q.write_text('{"prompt": "explicit"}\n')
    assert load_prompts(q, format="jsonl").prompts[0].text == "explicit"


def test_csv(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text(
        "id,prompt,answer,topic\n"
        '007,"What is 6 x 7?",42,math\n'
        'b,"A prompt\nover two lines",,misc\n'
        "c,,1,misc\n"
        "d,too,many,fields,here\n"
        "\n"
        "e,Last one,5,math\n",
        encoding="utf-8",
    )
    ps = load_prompts(p, id_field="id", answer_field="answer", skip_bad_rows=True)
    assert [x.id for x in ps.prompts] == ["007", "b", "e"]
    assert ps.prompts[0].answer == "42" and ps.prompts[1].answer is None  # empty cell: no answer
    assert ps.prompts[1].text == "A prompt\nover two lines"
    assert ps.prompts[0].meta == {"topic": "math"}
    assert [(b.line, b.kind) for b in ps.report.bad_rows] == [(5, "empty_prompt"), (6, "csv_shape")]
    assert ps.prompts[2].source.endswith(":8")  # the quoted newline and the blank line count


def test_parquet(tmp_path):
    table = pa.table(
        {
            "q": ["first", None, "third", ""],
            "meta": [{"lang": "en"}, {"lang": "fr"}, {"lang": "de"}, {"lang": "es"}],
            "ans": [1.5, 2.0, None, 3.0],
        }
    )
    p = tmp_path / "p.parquet"
    pq.write_table(table, p)
    ps = load_prompts(p, prompt_field="q", answer_field="ans", skip_bad_rows=True)
    assert [x.text for x in ps.prompts] == ["first", "third"]
    assert ps.prompts[0].answer == "1.5" and ps.prompts[1].answer is None
    assert ps.prompts[0].meta == {"meta": {"lang": "en"}}
    assert [(b.line, b.kind) for b in ps.report.bad_rows] == [(2, "missing_prompt"), (4, "empty_prompt")]
    assert ps.report.unit == "row" and ps.prompts[1].source.endswith(":3")
    with pytest.raises(PromptSetError, match="row 2"):
        load_prompts(p, prompt_field="q")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(PromptSetError, match="not a readable Parquet file"):
        load_prompts(bad)


# ----------------------------------------------------------------------------- context limits


def test_check_lengths():
    prompts = [Prompt(f"p{i}", " ".join(["w"] * n)) for i, n in enumerate([3, 10, 6, 2])]
    calls = []

    def words(texts):
        calls.append(len(texts))
        return [len(t.split()) for t in texts]

    res = check_lengths(
        prompts,
        [
            TokenLimit("student", words, 8),
            TokenLimit("teacher", lambda ts: [len(t.split()) + 1 for t in ts], 6),
        ],
        batch_size=3,
    )
    assert [p.id for p in res.kept] == ["p0", "p3"]
    assert [(t.id, t.limit_name, t.tokens) for t in res.too_long] == [
        ("p1", "student", 10),
        ("p1", "teacher", 11),
        ("p2", "teacher", 7),
    ]
    assert res.excluded_ids == ["p1", "p2"] and calls == [3, 1]
    assert res.to_dict()["excluded"] == 2
    with pytest.raises(ValueError, match="returned 1 counts for 4 prompts"):
        check_lengths(prompts, [TokenLimit("x", lambda ts: [1], 5)])
    with pytest.raises(ValueError, match="no prompt can fit"):
        check_lengths(prompts, [TokenLimit("x", words, 0)])
