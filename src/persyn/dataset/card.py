"""The data card (README.md of an export), from the template `templates/card.md.j2`: YAML front
matter (Hub card metadata, `configs` for `load_dataset`), the teacher mix, spend, files and
columns, training recipes for TRL and LLaMA-Factory, notes and the (scrubbed) config.

This module computes the numbers and tables; the template holds the words.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from persyn.dataset.formats import FORMATS, LLAMAFACTORY_INFO
from persyn.util.credentials import scrub_secrets

__all__ = ["CARD_NAME", "DataCard", "render_card"]

CARD_NAME = "README.md"


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


def _md_table(header: Sequence[str], body: Iterable[Sequence[Any]], align: str = "") -> str:
    aligns = [("---:" if a == "r" else "---") for a in (align or "l" * len(header))]
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join(aligns) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(out)


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _spend_table(card: DataCard) -> tuple[str, int]:
    """Generations per teacher and stage, tokens and cost, with a total row; and the total spent."""
    spent = sum(sum(v.values()) for v in card.generations.values())
    stages: list[str] = []
    for per in card.generations.values():
        stages += [s for s in per if s not in stages]
    teachers = list(dict.fromkeys([*card.generations, *card.tokens, *(card.cost or {})]))
    header = ["teacher", *[f"{s} gens" for s in stages], "total gens", "prompt tokens", "completion tokens"]
    if card.cost is not None:
        header.append("cost")
    body = []
    for t in teachers:
        g, tok = card.generations.get(t, {}), card.tokens.get(t, {})
        row = [t, *[_fmt_int(g.get(s, 0)) for s in stages], _fmt_int(sum(g.values()))]
        row += [_fmt_int(tok.get("prompt")), _fmt_int(tok.get("completion"))]
        if card.cost is not None:
            row.append(_fmt_float(card.cost.get(t), 4))
        body.append(row)
    total = [
        "**total**",
        *[_fmt_int(sum(card.generations.get(t, {}).get(s, 0) for t in teachers)) for s in stages],
    ]
    total += [_fmt_int(spent)]
    total += [
        _fmt_int(sum(card.tokens.get(t, {}).get(k, 0) for t in teachers)) for k in ("prompt", "completion")
    ]
    if card.cost is not None:
        total.append(_fmt_float(sum(v for v in card.cost.values() if v is not None), 4))
    return _md_table(header, [*body, total], "l" + "r" * (len(header) - 1)), spent


_FORMAT_USES = {
    "messages": "TRL conversational language modelling (`messages`: user, assistant)",
    "prompt_completion": "TRL conversational prompt-completion (`prompt`/`completion` message lists)",
    "sharegpt": "LLaMA-Factory sharegpt, registered as `{name}` in `{info}`",
    "parquet": 'one table, every column (pandas / pyarrow / `load_dataset("parquet")`)',
    "hf": "`datasets.load_from_disk(...)`, prompt-completion shape",
}

_COLUMNS = [
    ["`messages` / `prompt`+`completion` / `conversations`", "the training pair, in each format's shape"],
    ["`prompt`, `response` (Parquet)", "prompt and response as plain text"],
    ["`prompt_id`", "stable id of the prompt in the source prompt set"],
    ["`teacher`", "the teacher that wrote the response"],
    ["`strategy`", "how the teacher was chosen (`{strategy}`)"],
    ["`answer`", "reference answer from the prompt set, or null"],
    ["`quality`", "quality score r_q of this response (reward, judge or answer check), or null"],
    ["`learnability`", "student's mean token log-likelihood r_l of this response, or null"],
    ["`router_scores`", "router coefficient per teacher for this prompt (null when not routed)"],
    [
        "`generation`",
        "generation parameters, gen_key, finish reason, token counts, engine fingerprint "
        "(an object in JSON files, a JSON string in Parquet and the hf folder)",
    ],
]


def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("persyn", "templates"),
        autoescape=False,  # Markdown: tables escape their own cells (`_md_cell`)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = _md_cell
    return env.get_template("card.md.j2")


def render_card(
    card: DataCard,
    rows: Sequence[Any],
    *,
    name: str,
    out_dir: Path,
    files: Mapping[str, str],
    extra_notes: Sequence[str] = (),
) -> str:
    """The README.md text for `rows` (validated export rows) written as `files` into `out_dir`."""
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
    student = config.get("student").get("model") if isinstance(config.get("student"), Mapping) else None
    student = student or "<student model>"
    mix = sorted(by_teacher.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    mix_table = _md_table(
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
    spend_table, spent = _spend_table(card)
    uses = {f: u.format(name=name, info=LLAMAFACTORY_INFO) for f, u in _FORMAT_USES.items()}
    columns = [[c, m.format(strategy=card.strategy)] for c, m in _COLUMNS]
    folder = out_dir.resolve()
    tr_file = files.get("prompt_completion") or files.get("messages")
    return _template().render(
        front=yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        card=card,
        n=n,
        n_prompts=len({r.prompt_id for r in rows}),
        n_teachers=len(by_teacher),
        mix_table=mix_table,
        spent=spent,
        gts_share=100 * spent / card.gts_generations if card.gts_generations else None,
        spend_table=spend_table,
        files_table=_md_table(
            ["format", "file", "what"], [[f, f"`{files[f]}`", uses[f]] for f in FORMATS if f in files]
        ),
        loadable=loadable,
        folder=folder,
        columns_table=_md_table(["column", "meaning"], columns),
        train_file=folder / tr_file if tr_file else None,
        student=student,
        # zoo aliases are persyn's own names; trainers want a hub id or a local folder.
        model_hint="  # persyn zoo alias: use its hub id or local path" if student.startswith("zoo:") else "",
        name=name,
        sharegpt="sharegpt" in files,
        notes=[*card.notes, *extra_notes],
        config=yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(),
    )
