"""Export: every format loads back with the library its users use and keeps every row's provenance;
the LLaMA-Factory entry, the data card, atomic writes and the errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import persyn.dataset.formats as export_mod
from persyn.dataset import FORMATS, DataCard, ExportError, ExportRecord, export_dataset, scrub_secrets

datasets = pytest.importorskip("datasets")

SECRET = "sk-live-0123456789abcdefghijklmnop"
HF_SECRET = "hf_abcdefghijklmnopqrstuvwxyz123456"


def make_records() -> list[ExportRecord]:
    texts = [
        ("What is 2+3?", "2 + 3 = 5.", "5"),
        ("Write <script>alert('x')</script> safely", 'Use &lt; and "quotes" | pipes\nand new lines.', None),
        ("Übersetze: 猫", "Katze 🐈", None),
        ("Sum 1..4", "1+2+3+4 = 10", "10"),
        ("Name a prime", "7", None),
    ]
    out = []
    for i, (prompt, response, answer) in enumerate(texts):
        teacher = "qwen" if i % 2 == 0 else "gemma"
        out.append(
            ExportRecord(
                prompt_id=f"p{i:03d}",
                prompt=prompt,
                response=response,
                teacher=teacher,
                strategy="persyn",
                answer=answer,
                # One row routed without scores for "big" (a teacher outside the routed set): the
                # export fills every teacher's column, null where unknown.
                router_scores={"qwen": 0.25 * i, "gemma": -0.5} if i != 4 else {"big": 1.5},
                quality=[1.0, 0.5, None, 0.0, float("nan")][i],
                learnability=-0.125 * (i + 1),
                generation={
                    "params": {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0, "stop": []},
                    "gen_key": f"gk-{teacher}",
                    "finish_reason": "stop",
                    "prompt_tokens": 10 + i,
                    "completion_tokens": 5 + i,
                    "engine": f"transformers:{teacher}",
                },
            )
        )
    return out


def make_card(records, **over) -> DataCard:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.teacher] = counts.get(r.teacher, 0) + 1
    fields = dict(
        title="PerSyn test set",
        strategy="persyn",
        config={
            "student": {"model": "zoo:smollm2-135m-instruct"},
            "teachers": [
                {"name": "qwen", "model": "zoo:qwen", "api_key_env": "OPENAI_API_KEY"},
                {
                    "name": "big",
                    "model": "Qwen/Qwen2.5-72B-Instruct",
                    "base_url": "http://user:hunter2pass@gpu-box:8000/v1",
                    "api_key": SECRET,
                    "extra": {"hf_token": HF_SECRET, "note": f"Bearer {SECRET}"},
                },
            ],
            "generation": {"max_new_tokens": 64},
        },
        teacher_counts=counts,
        n_rows=len(records),
        generations={"qwen": {"calibration": 20, "routed": 3}, "gemma": {"calibration": 20, "routed": 2}},
        tokens={"qwen": {"prompt": 300, "completion": 120}, "gemma": {"prompt": 280, "completion": 90}},
        cost={"qwen": 0.5, "gemma": 0.25},
        gts_generations=100,
        notes=["a note"],
    )
    fields.update(over)
    return DataCard(**fields)


def expected_provenance(r: ExportRecord) -> dict:
    teachers = ["qwen", "gemma", "big"]  # first appearance: row teachers, then router score keys
    q = r.quality if r.quality is not None and math.isfinite(r.quality) else None
    return {
        "prompt_id": r.prompt_id,
        "teacher": r.teacher,
        "strategy": r.strategy,
        "answer": r.answer,
        "quality": q,
        "learnability": r.learnability,
        "router_scores": {t: r.router_scores.get(t) for t in teachers},
        "generation": r.generation,
    }


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    records = make_records()
    out = tmp_path_factory.mktemp("export") / "persyn"
    paths = export_dataset(records, out, formats=list(FORMATS), name="demo", card=make_card(records))
    return records, out, paths


# ----------------------------------------------------------------------------- formats


def test_returns_every_path_and_writes_nothing_else(exported):
    _, out, paths = exported
    assert set(paths) == {*FORMATS, "dataset_info", "card"}
    assert all(p.exists() for p in paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "README.md",
            "dataset_info.json",
            "demo.hf",
            "demo.messages.jsonl",
            "demo.parquet",
            "demo.prompt_completion.jsonl",
            "demo.sharegpt.json",
        ]
    )


def test_messages_jsonl_is_trl_conversational_with_provenance(exported):
    records, _, paths = exported
    rows = read_jsonl(paths["messages"])
    assert len(rows) == len(records)
    for row, r in zip(rows, records, strict=True):
        assert row["messages"] == [
            {"role": "user", "content": r.prompt},
            {"role": "assistant", "content": r.response},
        ]
        # A `prompt` column would send TRL down its prompt-completion path: never in this file.
        assert "prompt" not in row and "completion" not in row and "text" not in row
        assert {k: v for k, v in row.items() if k != "messages"} == expected_provenance(r)
    ds = datasets.load_dataset("json", data_files=str(paths["messages"]), split="train")
    assert ds.num_rows == len(records)
    assert ds[1]["messages"][0]["content"] == records[1].prompt
    assert ds[0]["router_scores"] == {"qwen": 0.0, "gemma": -0.5, "big": None}
    assert ds[2]["quality"] is None and ds[4]["quality"] is None  # None and NaN both become null
    assert ds[3]["generation"]["params"]["max_new_tokens"] == 64


def test_prompt_completion_is_conversational(exported):
    records, _, paths = exported
    rows = read_jsonl(paths["prompt_completion"])
    for row, r in zip(rows, records, strict=True):
        assert row["prompt"] == [{"role": "user", "content": r.prompt}]
        assert row["completion"] == [{"role": "assistant", "content": r.response}]
        assert "messages" not in row
        assert {k: v for k, v in row.items() if k not in ("prompt", "completion")} == expected_provenance(r)
    ds = datasets.load_dataset("json", data_files=str(paths["prompt_completion"]), split="train")
    assert ds[2]["completion"][0]["content"] == "Katze 🐈"
    assert ds["teacher"] == [r.teacher for r in records]


def test_sharegpt_and_llamafactory_entry(exported):
    records, out, paths = exported
    rows = json.loads(paths["sharegpt"].read_text(encoding="utf-8"))  # one JSON array
    assert isinstance(rows, list) and len(rows) == len(records)
    for row, r in zip(rows, records, strict=True):
        assert row["conversations"] == [
            {"from": "human", "value": r.prompt},
            {"from": "gpt", "value": r.response},
        ]
        assert {k: v for k, v in row.items() if k != "conversations"} == expected_provenance(r)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info == {
        "demo": {
            "file_name": "demo.sharegpt.json",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations"},
            "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
        }
    }
    # What LLaMA-Factory does with `dataset_dir: <out>` + `dataset: demo`: load_dataset("json") on the file.
    ds = datasets.load_dataset("json", data_files=str(out / info["demo"]["file_name"]), split="train")
    assert ds.num_rows == len(records)
    assert ds[1]["conversations"][1]["value"] == records[1].response


def test_parquet_has_every_column(exported):
    import pandas as pd
    import pyarrow.parquet as pq

    records, _, paths = exported
    schema = pq.read_schema(paths["parquet"])
    assert schema.names == [
        "prompt_id",
        "prompt",
        "response",
        "teacher",
        "strategy",
        "answer",
        "quality",
        "learnability",
        "router_scores",
        "generation",
    ]
    df = pd.read_parquet(paths["parquet"])
    assert df["prompt"].tolist() == [r.prompt for r in records]
    assert df["response"].tolist() == [r.response for r in records]
    assert df["quality"].isna().tolist() == [False, False, True, False, True]
    assert df["router_scores"][0] == {"qwen": 0.0, "gemma": -0.5, "big": None}
    for row, r in zip(pq.read_table(paths["parquet"]).to_pylist(), records, strict=True):
        prov = expected_provenance(r)
        row["generation"] = json.loads(row["generation"])
        assert {k: row[k] for k in prov} == prov
    ds = datasets.load_dataset("parquet", data_files=str(paths["parquet"]), split="train")
    assert ds[0]["router_scores"]["qwen"] == 0.0 and ds[0]["learnability"] == -0.125


def test_hf_folder_loads_from_disk(exported):
    records, _, paths = exported
    ds = datasets.load_from_disk(str(paths["hf"]))
    assert ds.num_rows == len(records)
    assert ds.column_names[:2] == ["prompt", "completion"]
    for row, r in zip(ds, records, strict=True):
        assert row["prompt"] == [{"role": "user", "content": r.prompt}]
        assert row["completion"] == [{"role": "assistant", "content": r.response}]
        prov = expected_provenance(r)
        assert json.loads(row.pop("generation")) == prov.pop("generation")
        assert {k: row[k] for k in prov} == prov


def test_folder_loads_with_load_dataset_through_the_card(exported):
    records, out, _ = exported
    default = datasets.load_dataset(str(out), split="train")
    assert "messages" in default.column_names and default.num_rows == len(records)
    pc = datasets.load_dataset(str(out), "prompt_completion", split="train")
    assert pc[0]["completion"][0]["content"] == records[0].response


# ----------------------------------------------------------------------------- the card


def card_front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_metadata_and_content(exported):
    records, out, paths = exported
    text = paths["card"].read_text(encoding="utf-8")
    meta = card_front_matter(text)
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    for cfg in meta["configs"]:
        assert (out / cfg["data_files"][0]["path"]).is_file()
    assert [c["config_name"] for c in meta["configs"]] == ["messages", "prompt_completion", "sharegpt"]
    assert "| qwen | 3 | 60.0% |" in text and "| gemma | 2 | 40.0% |" in text
    # 45 generations spent (20+3 + 20+2) against 100 for Generate-then-Select.
    assert "45 generations instead of 100 (45.0% of Generate-then-Select)" in text
    assert "SFTTrainer" in text and f"dataset_dir: {out.resolve()}" in text and "dataset: demo" in text
    assert "- a note" in text
    assert "OPENAI_API_KEY" in text  # variable names are kept, only values are secret


def test_card_holds_no_secrets(exported):
    text = exported[2]["card"].read_text(encoding="utf-8")
    for secret in (SECRET, HF_SECRET, "hunter2pass"):
        assert secret not in text
    assert "<redacted>" in text and "gpu-box:8000" in text


def test_scrub_secrets_keys_and_values():
    cfg = {
        "api_key": "abc",
        "api_key_env": "MY_KEY",
        "max_new_tokens": 5,
        "tokenizer": "t",
        "nested": [{"password": "p", "url": "https://u:p4ss@host/x", "x": f"token is {HF_SECRET}"}],
        "client_secret": None,
        "path": Path("/data/x.jsonl"),
        "stop": ("a", "b"),
    }
    out = scrub_secrets(cfg)
    assert out["api_key"] == "<redacted>" and out["api_key_env"] == "MY_KEY"
    assert out["max_new_tokens"] == 5 and out["tokenizer"] == "t" and out["client_secret"] is None
    assert out["nested"][0] == {
        "password": "<redacted>",
        "url": "https://<redacted>@host/x",
        "x": "token is <redacted>",
    }
    assert out["path"] == "/data/x.jsonl" and out["stop"] == ["a", "b"]  # plain data: dumps as YAML
    assert cfg["api_key"] == "abc"  # a copy, the input is untouched


# ----------------------------------------------------------------------------- errors


def test_errors_are_clear(tmp_path):
    records = make_records()
    card = make_card(records)
    with pytest.raises(ExportError, match="empty"):
        export_dataset([], tmp_path, formats=["messages"], name="x", card=card)
    with pytest.raises(
        ExportError, match="alpaca.*valid: messages, prompt_completion, sharegpt, parquet, hf"
    ):
        export_dataset(records, tmp_path, formats=["messages", "alpaca"], name="x", card=card)
    with pytest.raises(ExportError, match="no export format"):
        export_dataset(records, tmp_path, formats=[], name="x", card=card)
    with pytest.raises(ExportError, match="export name"):
        export_dataset(records, tmp_path, formats=["messages"], name="../x", card=card)
    with pytest.raises(ExportError, match="n_rows=9"):
        export_dataset(records, tmp_path, formats=["messages"], name="x", card=make_card(records, n_rows=9))
    with pytest.raises(ExportError, match="teacher_counts"):
        bad = make_card(records, teacher_counts={"qwen": 5})
        export_dataset(records, tmp_path, formats=["messages"], name="x", card=bad)
    broken = make_records()
    broken[2].generation = {"when": object()}
    with pytest.raises(ExportError, match=r"record 2 \(prompt_id 'p002'\)\.generation\.when"):
        export_dataset(broken, tmp_path, formats=["messages"], name="x", card=card)
    broken = make_records()
    broken[1].response = None
    with pytest.raises(ExportError, match="record 1.*response: expected a string"):
        export_dataset(broken, tmp_path, formats=["messages"], name="x", card=card)
    assert list(tmp_path.iterdir()) == []  # validation happens before the first write


def test_lone_surrogates_are_repaired_and_noted(tmp_path):
    records = make_records()
    records[0].response = "bad \ud800 text, split pair \ud83d\udc31"
    paths = export_dataset(
        records, tmp_path, formats=["messages", "parquet"], name="x", card=make_card(records)
    )
    assert read_jsonl(paths["messages"])[0]["messages"][1]["content"] == "bad \ufffd text, split pair 🐱"
    assert "invalid Unicode" in paths["card"].read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- atomicity and re-export


def test_failure_mid_write_leaves_no_half_file(tmp_path, monkeypatch):
    records = make_records()
    card = make_card(records)
    first = export_dataset(records, tmp_path, formats=["messages"], name="x", card=card)
    before = first["messages"].read_bytes()

    calls = {"n": 0}
    real = export_mod._json_line

    def flaky(obj):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real(obj)

    changed = make_records()
    for r in changed:
        r.response += " (v2)"
    monkeypatch.setattr(export_mod, "_json_line", flaky)
    with pytest.raises(OSError, match="simulated"):
        export_dataset(changed, tmp_path, formats=["messages", "parquet"], name="x", card=card)
    # The previous complete file is intact, no temporary file is left, and the folder has no card:
    # it reads as an unfinished export.
    assert first["messages"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.messages.jsonl"]

    # A crash inside Parquet writing (after the first row group) leaves no Parquet file either.
    monkeypatch.setattr(export_mod, "_json_line", real)
    monkeypatch.setattr(export_mod, "_BATCH_ROWS", 2)
    real_batches = export_mod._arrow_batches

    def dying_batches(*args):
        gen = real_batches(*args)
        yield next(gen)
        raise RuntimeError("killed (simulated)")

    monkeypatch.setattr(export_mod, "_arrow_batches", dying_batches)
    with pytest.raises(RuntimeError, match="simulated"):
        export_dataset(changed, tmp_path, formats=["messages", "parquet"], name="x", card=card)
    assert not (tmp_path / "x.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert not (tmp_path / "README.md").exists()

    # The next export goes through and overwrites cleanly, several row groups and all.
    monkeypatch.setattr(export_mod, "_arrow_batches", real_batches)
    paths = export_dataset(changed, tmp_path, formats=["messages", "parquet"], name="x", card=card)
    assert all(row["messages"][1]["content"].endswith("(v2)") for row in read_jsonl(paths["messages"]))
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(paths["parquet"])
    assert pf.metadata.num_row_groups == 3 and pf.metadata.num_rows == len(records)
    assert (tmp_path / "README.md").exists()


def test_reexport_replaces_stale_files_and_keeps_other_llamafactory_entries(tmp_path):
    records = make_records()
    card = make_card(records)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    # What a SIGKILL mid-write leaves: a temporary name, which the next export clears.
    (tmp_path / ".x.messages.jsonl.tmp-99999").write_text('{"half": ')
    export_dataset(records, tmp_path, formats=["sharegpt", "hf"], name="x", card=card)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"mine", "x"}
    # Re-export the hf folder over itself (folder swap) and drop sharegpt.
    paths = export_dataset(records[:3], tmp_path, formats=["hf"], name="x", card=make_card(records[:3]))
    assert not (tmp_path / "x.sharegpt.json").exists()
    assert json.loads((tmp_path / "dataset_info.json").read_text()) == {"mine": {"file_name": "mine.json"}}
    assert datasets.load_from_disk(str(paths["hf"])).num_rows == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "dataset_info.json", "x.hf"]
    assert "configs" not in card_front_matter(paths["card"].read_text())
