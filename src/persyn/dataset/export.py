"""Export: the routed responses as SFT datasets in the formats trainers read, plus a data card.

    paths = export_dataset(records, run_dir / "dataset",
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

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from persyn.dataset.card import CARD_NAME, DataCard, render_card
from persyn.dataset.formats import FILE_NAMES, FORMATS, LLAMAFACTORY_INFO, WRITERS, llamafactory_entry
from persyn.dataset.formats import update_llamafactory_info as _update_llamafactory_info
from persyn.dataset.rows import ExportError, ExportRecord, Row, prepare
from persyn.util.atomic import atomic_write, remove
from persyn.util.credentials import scrub_secrets

__all__ = [
    "FORMATS",
    "DataCard",
    "ExportError",
    "ExportRecord",
    "export_dataset",
    "render_card",
    "scrub_secrets",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


def _check_card(card: DataCard, rows: Sequence[Row]) -> None:
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
    rows, teachers, notes = prepare(records)
    _check_card(card, rows)
    files = {f: FILE_NAMES[f].format(name=name) for f in wanted}
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
            remove(leftover)
    (out_dir / CARD_NAME).unlink(missing_ok=True)
    for f in FORMATS:
        if f not in wanted:
            remove(out_dir / FILE_NAMES[f].format(name=name))

    paths: dict[str, Path] = {}
    for f in wanted:
        path = out_dir / files[f]
        WRITERS[f](path, rows, teachers)
        paths[f] = path
    info = _update_llamafactory_info(
        out_dir, name, llamafactory_entry(files["sharegpt"]) if "sharegpt" in files else None
    )
    if info is not None:
        paths["dataset_info"] = info
    card_path = out_dir / CARD_NAME
    atomic_write(card_path, card_text)
    paths["card"] = card_path
    return paths
