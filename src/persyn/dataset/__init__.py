"""Export: the routed responses as SFT datasets in the formats trainers read, plus a data card.

    paths = export_dataset(records, run_dir / "export" / "persyn",
                           formats=["messages", "prompt_completion", "sharegpt", "parquet", "hf"],
                           name="persyn", card=DataCard(...))
    paths["messages"]   # Path of persyn.messages.jsonl; paths["card"] is README.md

One folder per export (one strategy). The files, named after `name`:

    {name}.messages.jsonl           TRL conversational: {"messages": [user, assistant], ...}
    {name}.prompt_completion.jsonl  TRL conversational prompt-completion: {"prompt": [user],
                                    "completion": [assistant], ...}
    {name}.sharegpt.json            LLaMA-Factory sharegpt (a JSON array), registered in dataset_info.json
    {name}.parquet                  one analysis table: prompt and response as text, all provenance
    {name}.hf/                      datasets.save_to_disk, prompt-completion shape (load_from_disk)
    dataset_info.json               LLaMA-Factory's registry: `dataset: {name}`, `dataset_dir: <folder>`
    README.md                       the data card; its YAML front matter lets `load_dataset(<folder>)` work

Every row carries its provenance next to the training columns: prompt_id, teacher, strategy, answer,
quality, learnability, router_scores (one float per teacher, null where unknown) and generation
(parameters, gen_key, finish reason, token counts, engine fingerprint). In the JSON files `generation`
is an object; in Parquet and the hf folder it is a JSON string, because its keys vary by engine and a
string keeps those schemas stable. No file has a column TRL would misread: the messages file has no
`prompt` column (TRL would take the prompt-completion path and look for `completion`).

Crash safety: each file is written under a temporary name in the same folder and renamed into place;
README.md is removed first and written last, so a folder without a card is an unfinished export.
Re-exporting overwrites this name's files and removes those of formats no longer asked for.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "FORMATS",
    "DataCard",
    "ExportError",
    "ExportRecord",
    "export_dataset",
    "render_card",
    "scrub_secrets",
]

FORMATS = ("messages", "prompt_completion", "sharegpt", "parquet", "hf")

# File (or folder) each format writes, relative to the export folder.
_FILE_NAMES: dict[str, str] = {
    "messages": "{name}.messages.jsonl",
    "prompt_completion": "{name}.prompt_completion.jsonl",
    "sharegpt": "{name}.sharegpt.json",
    "parquet": "{name}.parquet",
    "hf": "{name}.hf",
}
CARD_NAME = "README.md"
LLAMAFACTORY_INFO = "dataset_info.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
# Rows per Arrow batch: bounds the memory of Parquet writing for million-row exports.
_BATCH_ROWS = 10_000
REDACTED = "<redacted>"


class ExportError(ValueError):
    """The export cannot be written as asked (bad records, unknown format, inconsistent card)."""


@dataclass
class ExportRecord:
    """One training row: a prompt, the response of the teacher it went to, and where it came from."""

    prompt_id: str
    prompt: str
    response: str
    teacher: str
    strategy: str  # "persyn", "strong", "car", "mix", "random", "oracle", "family-strong"
    answer: str | None = None  # reference answer, if any
    router_scores: dict[str, float] | None = None
    quality: float | None = None
    learnability: float | None = None
    # params, gen_key, finish_reason, prompt/completion tokens, engine fingerprint
    generation: dict = field(default_factory=dict)


@dataclass
class DataCard:
    """What the README.md of an export says beyond what the rows themselves show."""

    title: str
    strategy: str
    config: dict
    teacher_counts: dict[str, int]
    n_rows: int
    generations: dict[str, dict[str, int]]  # teacher -> {"calibration": n, "routed": n, ...}
    tokens: dict[str, dict[str, int]]  # teacher -> {"prompt": n, "completion": n}
    cost: dict[str, float] | None = None  # teacher -> cost, where prices are given
    gts_generations: int | None = None  # what Generate-then-Select would have cost
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- secrets

# Keys whose string value is a credential. `api_key_env` (a variable *name*), `max_new_tokens` and
# `prompt_tokens` do not match; `api_key`, `hf_token`, `client_secret`, `password` do.
_SECRET_KEY = re.compile(
    r"(^|[_\-])(api_?key|apikey|secret|password|passwd|token|access_?key|auth|authorization|"
    r"bearer|credentials?|private_?key|cookie)$",
    re.IGNORECASE,
)
# Values that look like a credential wherever they sit (OpenAI, HF, GitHub, Slack, AWS, bearer headers).
_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,}"
    r"|AKIA[0-9A-Z]{16}|Bearer\s+[A-Za-z0-9._\-]{8,})"
)
# user:password@ inside a URL.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s:]+:[^/@\s]+@")


def scrub_secrets(value: Any) -> Any:
    """A deep copy of `value` with anything that looks like a credential replaced by '<redacted>';
    plain data only (mappings -> dict, sequences -> list, other objects -> their text).

    The config only ever holds environment variable *names* (the store refuses keys), so this is a
    second line of defence for what ends up in a card or a report."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if _SECRET_KEY.search(str(k)) and v not in (None, "", [], {}) and not isinstance(v, bool):
                out[k] = REDACTED
            else:
                out[k] = scrub_secrets(v)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_secrets(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return scrub_secrets(value.item())
        except (TypeError, ValueError):
            pass
    # Anything else (paths, enums) as text, so that the result always dumps as YAML or JSON.
    text = value if isinstance(value, str) else str(value)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _SECRET_VALUE.sub(REDACTED, text)


# ----------------------------------------------------------------------------- rows


def _json_value(value: Any, where: str) -> Any:
    """Plain JSON values: numpy scalars -> Python, NaN/inf -> None (JSON has no NaN), paths -> str."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            return _json_value(value.item(), where)
        except (TypeError, ValueError):
            pass
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ExportError(f"{where}: {type(value).__name__} is not a JSON value")


def _float_or_none(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ExportError(f"{where}: expected a number or None, got {value!r}") from None
    return f if math.isfinite(f) else None


def _text(value: Any, where: str) -> tuple[str, bool]:
    """The string, and whether it had to be repaired (lone surrogates from a bad decode)."""
    if not isinstance(value, str):
        raise ExportError(f"{where}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
        return value, False
    except UnicodeEncodeError:
        # Neither UTF-8 files nor Arrow can hold lone surrogates. A UTF-16 round trip joins split
        # pairs back into their character and turns each lone one into a single U+FFFD.
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), True


@dataclass
class _Row:
    """A validated record: plain Python values only, router scores over the export's teacher set."""

    prompt_id: str
    prompt: str
    response: str
    teacher: str
    strategy: str
    answer: str | None
    quality: float | None
    learnability: float | None
    router_scores: dict[str, float | None] | None
    generation: dict

    def provenance(self, generation_as_json: bool = False) -> dict[str, Any]:
        gen: Any = self.generation
        if generation_as_json:
            gen = json.dumps(gen, ensure_ascii=False, sort_keys=True)
        return {
            "prompt_id": self.prompt_id,
            "teacher": self.teacher,
            "strategy": self.strategy,
            "answer": self.answer,
            "quality": self.quality,
            "learnability": self.learnability,
            "router_scores": self.router_scores,
            "generation": gen,
        }


def _prepare(records: Sequence[ExportRecord]) -> tuple[list[_Row], list[str], list[str]]:
    """Validate every record before anything is written; returns rows, the teacher set, notes."""
    if not records:
        raise ExportError("nothing to export: the record list is empty (did routing or generation run?)")
    teachers: dict[str, None] = {}
    for i, r in enumerate(records):
        if not isinstance(r, ExportRecord):
            raise ExportError(f"record {i}: expected an ExportRecord, got {type(r).__name__}")
        teachers.setdefault(str(r.teacher), None)
        for t in r.router_scores or {}:
            teachers.setdefault(str(t), None)
    teacher_list = list(teachers)
    rows: list[_Row] = []
    repaired = empty = 0
    for i, r in enumerate(records):
        where = f"record {i} (prompt_id {r.prompt_id!r})"
        for name in ("prompt_id", "teacher", "strategy"):
            v = getattr(r, name)
            if not isinstance(v, str) or not v:
                raise ExportError(f"{where}: {name} must be a non-empty string, got {v!r}")
        prompt, bad_p = _text(r.prompt, f"{where}.prompt")
        response, bad_r = _text(r.response, f"{where}.response")
        repaired += bad_p or bad_r
        empty += not response.strip()
        answer = None if r.answer is None else str(r.answer)
        scores = None
        if r.router_scores is not None:
            if not isinstance(r.router_scores, Mapping):
                raise ExportError(f"{where}.router_scores: expected a mapping teacher -> score")
            given = {
                str(k): _float_or_none(v, f"{where}.router_scores[{k!r}]") for k, v in r.router_scores.items()
            }
            scores = {t: given.get(t) for t in teacher_list}
        if not isinstance(r.generation, Mapping):
            raise ExportError(f"{where}.generation: expected a mapping, got {type(r.generation).__name__}")
        rows.append(
            _Row(
                prompt_id=r.prompt_id,
                prompt=prompt,
                response=response,
                teacher=r.teacher,
                strategy=r.strategy,
                answer=answer,
                quality=_float_or_none(r.quality, f"{where}.quality"),
                learnability=_float_or_none(r.learnability, f"{where}.learnability"),
                router_scores=scores,
                generation=scrub_secrets(_json_value(dict(r.generation), f"{where}.generation")),
            )
        )
    notes = []
    if repaired:
        notes.append(f"{repaired} row(s) held invalid Unicode (lone surrogates), replaced by U+FFFD.")
    if empty:
        notes.append(f"{empty} row(s) have an empty response.")
    return rows, teacher_list, notes


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _messages_row(row: _Row) -> dict:
    return {"messages": _user(row.prompt) + _assistant(row.response), **row.provenance()}


def _prompt_completion_row(row: _Row) -> dict:
    return {"prompt": _user(row.prompt), "completion": _assistant(row.response), **row.provenance()}


def _sharegpt_row(row: _Row) -> dict:
    conv = [{"from": "human", "value": row.prompt}, {"from": "gpt", "value": row.response}]
    return {"conversations": conv, **row.provenance()}


def _json_line(obj: dict) -> str:
    # allow_nan=False: a NaN that slipped through would make the line invalid JSON for every reader.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


# ----------------------------------------------------------------------------- atomic writes


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _atomic(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success it replaces `final` in one rename, on any
    failure it is removed and `final` (the previous complete version, if any) is left untouched."""
    tmp = _tmp_name(final)
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            # A folder cannot replace a non-empty folder in one rename: swap, then drop the old one.
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            _remove(old)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        _remove(tmp)
        raise


def _write_text_file(final: Path, chunks: Iterable[str]) -> None:
    with _atomic(final) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())


def _jsonl(rows: Iterable[dict]) -> Iterator[str]:
    for obj in rows:
        yield _json_line(obj) + "\n"


def _json_array(rows: Iterable[dict]) -> Iterator[str]:
    # One object per line inside the array: streams, diffs and greps like JSONL, parses as JSON.
    first = True
    yield "["
    for obj in rows:
        yield ("\n" if first else ",\n") + _json_line(obj)
        first = False
    yield "\n]\n"


# ----------------------------------------------------------------------------- arrow


def _arrow_schema(teachers: Sequence[str], shape: str):
    import pyarrow as pa

    msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    if shape == "table":
        head = [("prompt_id", pa.string()), ("prompt", pa.string()), ("response", pa.string())]
    else:  # prompt-completion, conversational
        head = [("prompt", msg), ("completion", msg), ("prompt_id", pa.string())]
    return pa.schema(
        head
        + [
            ("teacher", pa.string()),
            ("strategy", pa.string()),
            ("answer", pa.string()),
            ("quality", pa.float64()),
            ("learnability", pa.float64()),
            ("router_scores", pa.struct([(t, pa.float64()) for t in teachers])),
            ("generation", pa.string()),
        ]
    )


def _arrow_batches(rows: Sequence[_Row], schema, shape: str):
    import pyarrow as pa

    for start in range(0, len(rows), _BATCH_ROWS):
        chunk = rows[start : start + _BATCH_ROWS]
        if shape == "table":
            dicts = [
                {"prompt_id": r.prompt_id, "prompt": r.prompt, "response": r.response}
                | r.provenance(generation_as_json=True)
                for r in chunk
            ]
        else:
            dicts = [
                {"prompt": _user(r.prompt), "completion": _assistant(r.response)}
                | r.provenance(generation_as_json=True)
                for r in chunk
            ]
        yield pa.Table.from_pylist(dicts, schema=schema)


def _write_parquet(final: Path, rows: Sequence[_Row], teachers: Sequence[str]) -> None:
    import pyarrow.parquet as pq

    schema = _arrow_schema(teachers, "table")
    with _atomic(final) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for table in _arrow_batches(rows, schema, "table"):
                writer.write_table(table)


def _write_hf(final: Path, rows: Sequence[_Row], teachers: Sequence[str]) -> None:
    import datasets
    import pyarrow as pa

    schema = _arrow_schema(teachers, "prompt_completion")
    table = pa.concat_tables(list(_arrow_batches(rows, schema, "prompt_completion")))
    ds = datasets.Dataset(table)
    with _atomic(final) as tmp:
        ds.save_to_disk(str(tmp))


# ----------------------------------------------------------------------------- LLaMA-Factory


def llamafactory_entry(file_name: str) -> dict:
    """The dataset_info.json entry for a sharegpt file (keys as in LLaMA-Factory's data/README)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }


def _update_llamafactory_info(out_dir: Path, name: str, entry: dict | None) -> Path | None:
    """Add (or, with entry=None, remove) this export's entry, keeping any other entries in the file."""
    path = out_dir / LLAMAFACTORY_INFO
    info: dict = {}
    if path.exists():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ExportError(
                f"{path}: exists but is not valid JSON ({e}); move it away and re-export"
            ) from e
        if not isinstance(info, dict):
            raise ExportError(f"{path}: exists but is not a JSON object; move it away and re-export")
    if entry is None:
        if name not in info:
            return None
        info.pop(name)
        if not info:
            path.unlink()
            return None
    else:
        info[name] = entry
    _write_text_file(path, [json.dumps(info, indent=2, ensure_ascii=False) + "\n"])
    return path


# ----------------------------------------------------------------------------- the card


def _size_category(n: int) -> str:
    for bound, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < bound:
            return label
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"


def _fmt_int(n: float | int | None) -> str:
    return "—" if n is None else f"{int(n):,}"


def _fmt_float(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], body: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    aligns = [("---:" if a == "r" else "---") for a in (align or "l" * len(header))]
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join(aligns) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return out


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def render_card(
    card: DataCard,
    rows: Sequence[Any],
    *,
    name: str,
    out_dir: Path,
    files: Mapping[str, str],
    extra_notes: Sequence[str] = (),
) -> str:
    """The README.md text: YAML front matter (Hub card metadata, `configs` for `load_dataset`) and
    the teacher mix, spend, column reference, training recipes and (scrubbed) config."""
    n = len(rows)
    by_teacher: dict[str, list] = {}
    for r in rows:
        by_teacher.setdefault(r.teacher, []).append(r)
    # `load_dataset(<folder>)` reads every config with one builder, inferred from the files' extension,
    # so only the JSON formats are configs; Parquet loads with `load_dataset("parquet", ...)`.
    loadable = [f for f in ("messages", "prompt_completion", "sharegpt") if f in files]
    front: dict[str, Any] = {
        "pretty_name": card.title,
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "distillation", "sft", "persyn", f"strategy:{card.strategy}"],
        "size_categories": [_size_category(n)],
    }
    if loadable:
        front["configs"] = [
            {"config_name": f, "data_files": [{"split": "train", "path": files[f]}]}
            | ({"default": True} if i == 0 else {})
            for i, f in enumerate(loadable)
        ]
    config = scrub_secrets(card.config)
    student = (
        (config.get("student") or {}).get("model") if isinstance(config.get("student"), Mapping) else None
    )
    student = student or "<student model>"
    # zoo aliases are persyn's own names; trainers want a hub id or a local folder.
    model_hint = "  # persyn zoo alias: use its hub id or local path" if student.startswith("zoo:") else ""
    folder = out_dir.resolve()

    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {card.title}", ""]
    lines += [
        f"A personalised distillation dataset built by [persyn](https://arxiv.org/abs/2510.10925) "
        f"(PerSyn, *Route then Generate*): strategy **{card.strategy}**, **{n:,}** rows, "
        f"{len({r.prompt_id for r in rows}):,} distinct prompts, written by {len(by_teacher)} teacher(s). "
        "Each prompt's response comes from the one teacher chosen for it; every row keeps its provenance.",
        "",
    ]

    # Teacher mix
    lines += ["## Teacher mix", ""]
    mix = sorted(by_teacher.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    lines += _md_table(
        ["teacher", "rows", "share", "mean quality", "mean learnability"],
        [
            [
                t,
                f"{len(rs):,}",
                f"{100 * len(rs) / n:.1f}%",
                _fmt_float(_mean(r.quality for r in rs)),
                _fmt_float(_mean(r.learnability for r in rs)),
            ]
            for t, rs in mix
        ],
        "lrrrr",
    )
    lines.append("")

    # Spend
    lines += ["## Generations, tokens and cost", ""]
    spent = sum(sum(v.values()) for v in card.generations.values())
    if card.gts_generations:
        share = 100 * spent / card.gts_generations
        lines += [
            f"**{spent:,} generations instead of {card.gts_generations:,} "
            f"({share:.1f}% of Generate-then-Select)**, "
            "where Generate-then-Select has every teacher answer every prompt.",
            "",
        ]
    stages: list[str] = []
    for per in card.generations.values():
        for s in per:
            if s not in stages:
                stages.append(s)
    spend_teachers = list(dict.fromkeys([*card.generations, *card.tokens, *(card.cost or {})]))
    header = ["teacher", *[f"{s} gens" for s in stages], "total gens", "prompt tokens", "completion tokens"]
    if card.cost is not None:
        header.append("cost")
    body = []
    for t in spend_teachers:
        g = card.generations.get(t, {})
        tok = card.tokens.get(t, {})
        row = [t, *[_fmt_int(g.get(s, 0)) for s in stages], _fmt_int(sum(g.values()))]
        row += [_fmt_int(tok.get("prompt")), _fmt_int(tok.get("completion"))]
        if card.cost is not None:
            row.append(_fmt_float(card.cost.get(t), 4))
        body.append(row)
    total = [
        "**total**",
        *[_fmt_int(sum(card.generations.get(t, {}).get(s, 0) for t in spend_teachers)) for s in stages],
    ]
    total += [_fmt_int(spent)]
    total += [
        _fmt_int(sum(card.tokens.get(t, {}).get(k, 0) for t in spend_teachers))
        for k in ("prompt", "completion")
    ]
    if card.cost is not None:
        total.append(_fmt_float(sum(v for v in card.cost.values() if v is not None), 4))
    lines += _md_table(header, [*body, total], "l" + "r" * (len(header) - 1))
    lines.append("")

    # Files and columns
    lines += ["## Files", ""]
    how = {
        "messages": "TRL conversational language modelling (`messages`: user, assistant)",
        "prompt_completion": "TRL conversational prompt-completion (`prompt`/`completion` message lists)",
        "sharegpt": f"LLaMA-Factory sharegpt, registered as `{name}` in `{LLAMAFACTORY_INFO}`",
        "parquet": 'one table, every column (pandas / pyarrow / `load_dataset("parquet")`)',
        "hf": "`datasets.load_from_disk(...)`, prompt-completion shape",
    }
    lines += _md_table(
        ["format", "file", "what"], [[f, f"`{files[f]}`", how[f]] for f in FORMATS if f in files]
    )
    lines += [
        "",
        f'`load_dataset("{folder}", "<config>")` loads any of: '
        + ", ".join(f"`{f}`" for f in loadable)
        + (f" (default `{loadable[0]}`)." if loadable else "."),
        "",
        "### Columns",
        "",
    ]
    lines += _md_table(
        ["column", "meaning"],
        [
            [
                "`messages` / `prompt`+`completion` / `conversations`",
                "the training pair, in each format's shape",
            ],
            ["`prompt`, `response` (Parquet)", "prompt and response as plain text"],
            ["`prompt_id`", "stable id of the prompt in the source prompt set"],
            ["`teacher`", "the teacher that wrote the response"],
            ["`strategy`", f"how the teacher was chosen (`{card.strategy}`)"],
            ["`answer`", "reference answer from the prompt set, or null"],
            ["`quality`", "quality score r_q of this response (reward, judge or answer check), or null"],
            ["`learnability`", "student's mean token log-likelihood r_l of this response, or null"],
            ["`router_scores`", "router coefficient per teacher for this prompt (null when not routed)"],
            [
                "`generation`",
                "generation parameters, gen_key, finish reason, token counts, engine fingerprint "
                "(an object in JSON files, a JSON string in Parquet and the hf folder)",
            ],
        ],
    )
    lines.append("")

    # Training recipes
    tr_file = files.get("prompt_completion") or files.get("messages")
    lines += ["## Train on it", "", "### TRL", ""]
    if tr_file:
        lines += [
            "```python",
            "from datasets import load_dataset",
            "from trl import SFTConfig, SFTTrainer",
            "",
            f'dataset = load_dataset("json", data_files="{folder / tr_file}", split="train")',
            "trainer = SFTTrainer(",
            f'    model="{student}",{model_hint}',
            "    train_dataset=dataset,",
            f'    args=SFTConfig(output_dir="{name}-sft"),',
            ")",
            "trainer.train()",
            "```",
            "",
            "Both JSONL files are conversational, so `SFTTrainer` applies the student's chat template; "
            "no `dataset_text_field` is needed (that is for plain-text `text` columns). "
            "The prompt-completion file trains on the response tokens only (TRL's `completion_only_loss` "
            "default), as PerSyn does; with the `messages` file set `assistant_only_loss=True` for the same. "
            "Provenance columns are ignored by the trainer.",
            "",
        ]
    else:
        lines += ["Export the `messages` or `prompt_completion` format for TRL.", ""]
    lines += ["### LLaMA-Factory", ""]
    if "sharegpt" in files:
        lines += [
            "```yaml",
            f"model_name_or_path: {student}{model_hint}",
            "stage: sft",
            "do_train: true",
            "finetuning_type: full        # or lora",
            f"dataset_dir: {folder}",
            f"dataset: {name}",
            "template: <the student's template, e.g. qwen, llama3, gemma>",
            "cutoff_len: 2048",
            f"output_dir: saves/{name}-sft",
            "per_device_train_batch_size: 4",
            "gradient_accumulation_steps: 4",
            "learning_rate: 1.0e-5",
            "num_train_epochs: 3.0",
            "lr_scheduler_type: cosine",
            "bf16: true",
            "```",
            "",
            "LLaMA-Factory trains on the response only by default (`train_on_prompt: false`).",
            "",
        ]
    else:
        lines += ["Export the `sharegpt` format for LLaMA-Factory.", ""]

    notes = [*card.notes, *extra_notes]
    if notes:
        lines += ["## Notes", ""] + [f"- {_md_cell(x)}" for x in notes] + [""]
    lines += [
        "## Licence",
        "",
        "The responses were written by the teacher models above; their licences and terms of use apply.",
        "",
        "## Config",
        "",
        "The run's config (environment variable *names* only; anything that looks like a secret "
        "is redacted).",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- entry point

_WRITERS: dict[str, Callable[[Path, list[_Row], list[str]], None]] = {
    "messages": lambda p, rows, _t: _write_text_file(p, _jsonl(_messages_row(r) for r in rows)),
    "prompt_completion": lambda p, rows, _t: _write_text_file(
        p, _jsonl(_prompt_completion_row(r) for r in rows)
    ),
    "sharegpt": lambda p, rows, _t: _write_text_file(p, _json_array(_sharegpt_row(r) for r in rows)),
    "parquet": _write_parquet,
    "hf": _write_hf,
}


def _check_card(card: DataCard, rows: Sequence[_Row]) -> None:
    # The card must describe the rows it ships with; a mismatch is a bug upstream, not a typo to gloss over.
    if card.n_rows != len(rows):
        raise ExportError(f"data card says n_rows={card.n_rows} but {len(rows)} records were given")
    actual = Counter(r.teacher for r in rows)
    stated = {t: c for t, c in card.teacher_counts.items() if c}
    if dict(actual) != stated:
        raise ExportError(
            f"data card teacher_counts {stated} do not match the records' teachers {dict(actual)}"
        )


def export_dataset(
    records: list[ExportRecord],
    out_dir: Path,
    *,
    formats: list[str],
    name: str,
    card: DataCard,
) -> dict[str, Path]:
    """Write `records` in each of `formats` into `out_dir`, with a data card and (for sharegpt) the
    LLaMA-Factory `dataset_info.json` entry. Returns {format: path} plus "card" and, when written,
    "dataset_info". Everything is validated before the first byte is written."""
    out_dir = Path(out_dir)
    if not formats:
        raise ExportError(f"no export format given; choose from {', '.join(FORMATS)}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(
            f"unknown export format(s) {', '.join(map(repr, unknown))}; valid: {', '.join(FORMATS)}"
        )
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ExportError(f"export name {name!r} must be letters, digits, '_', '-', '.' (it names files)")
    wanted = [f for f in FORMATS if f in formats]  # canonical order, duplicates dropped
    rows, teachers, notes = _prepare(records)
    _check_card(card, rows)
    files = {f: _FILE_NAMES[f].format(name=name) for f in wanted}
    card_text = render_card(card, rows, name=name, out_dir=out_dir, files=files, extra_notes=notes)

    out_dir.mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed export (temporary names only) and the old card go first: from here until
    # the new card lands, the folder reads as unfinished.
    for pattern in (
        f".{name}.*.tmp-*",
        f".{name}.*.old-*",
        f".{CARD_NAME}.tmp-*",
        f".{LLAMAFACTORY_INFO}.tmp-*",
    ):
        for leftover in out_dir.glob(pattern):
            _remove(leftover)
    (out_dir / CARD_NAME).unlink(missing_ok=True)
    for f in FORMATS:
        if f not in wanted:
            _remove(out_dir / _FILE_NAMES[f].format(name=name))

    paths: dict[str, Path] = {}
    for f in wanted:
        path = out_dir / files[f]
        _WRITERS[f](path, rows, teachers)
        paths[f] = path
    info = _update_llamafactory_info(
        out_dir, name, llamafactory_entry(files["sharegpt"]) if "sharegpt" in files else None
    )
    if info is not None:
        paths["dataset_info"] = info
    card_path = out_dir / CARD_NAME
    _write_text_file(card_path, [card_text])
    paths["card"] = card_path
    return paths
