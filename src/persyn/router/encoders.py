"""Prompt encoders for the router, and the embedding cache.

Two kinds, one interface (`PromptEncoder`):
- a sentence-transformers folder (the default `zoo:minilm-l6-v2`), pooled as its own config says;
- any Hugging Face model through `AutoModel` (the paper's LM-backbone router), pooled by the
  hidden state of the last real token (`last`, the default for causal LMs), the mean over tokens
  (`mean`, the default otherwise) or the first token (`cls`).

Frozen encoders embed each prompt once: `embed_prompts` looks prompts up in an `EmbeddingCache`
(in memory by default; the pipeline backs it with its run store) and encodes only what is missing.
`forward` is the differentiable path, used when the encoder is fine-tuned end to end.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from persyn.defaults import ENCODER, ROUTER
from persyn.store.keys import digest
from persyn.util.errors import PersynError
from persyn.util.hardware import resolve_device, resolve_dtype

Pooling = Literal["auto", "mean", "last", "cls"]
POOLINGS: tuple[str, ...] = ("auto", "mean", "last", "cls")
DEFAULT_ENCODER = ENCODER  # persyn.defaults holds it


class EncoderError(PersynError, RuntimeError):
    """An encoder could not be found or loaded."""


def resolve_encoder_path(name: str) -> str:
    """A zoo alias, a local folder or a hub id -> what `from_pretrained` takes."""
    from persyn.engines.spec import resolve_model

    return resolve_model(name)


def _is_sentence_transformers_folder(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "modules.json").is_file()


class PromptEncoder:
    """Base class: text -> fixed-size vector. Subclasses set `kind`, `dim`, `pooling`."""

    kind: str
    name: str
    pooling: str
    max_length: int
    dim: int
    #: Set when the weights were fine-tuned: a digest of them, so cached embeddings of the frozen
    #: base model are never reused for the tuned one.
    finetuned_digest: str | None = None

    @property
    def key(self) -> str:
        """Identity of everything that changes an embedding (the embedding-cache namespace).
        The dtype is named when it is not float32 (`dtype: auto` differs by machine)."""
        base = f"{self.name}|{self.kind}|{self.pooling}|{self.max_length}"
        dtype = next(self.module.parameters()).dtype
        if dtype != torch.float32:
            base += "|" + str(dtype).removeprefix("torch.")
        return f"{base}|ft:{self.finetuned_digest}" if self.finetuned_digest else base

    @property
    def module(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable embeddings (float32, on the encoder's device)."""
        raise NotImplementedError

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings as float32 numpy, no gradients. Texts are batched by length (less padding)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                for s in range(0, len(texts), batch_size):
                    idx = order[s : s + batch_size]
                    out[idx] = self.forward([texts[i] for i in idx]).float().cpu().numpy()
        finally:
            self.module.train(was_training)
        return out

    def save(self, path: str | Path) -> None:
        """Write the (fine-tuned) weights as safetensors with the tokenizer."""
        raise NotImplementedError


class SentenceTransformerEncoder(PromptEncoder):
    """A sentence-transformers folder; pooling and normalisation come from its own config."""

    kind = "sentence-transformers"

    def __init__(
        self, name: str, path: str, *, max_length: int = 256, device: str = "cpu", dtype: str = "auto"
    ):
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.pooling = "auto"
        self.max_length = max_length
        torch_dtype = resolve_dtype(dtype, resolve_device(device))
        kwargs = {"model_kwargs": {"dtype": torch_dtype}} if torch_dtype is not None else {}
        try:
            self.model = SentenceTransformer(path, device=device, **kwargs)
        except Exception as exc:  # many loader errors; one clear message
            raise EncoderError(
                f"cannot load sentence-transformers encoder {name} from {path}: {exc}"
            ) from exc
        self.model.max_seq_length = max_length
        # get_embedding_dimension is the sentence-transformers >= 5 name.
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or (
            self.model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_fn())

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        # `preprocess` is the sentence-transformers >= 5 name of `tokenize`.
        prep = getattr(self.model, "preprocess", None) or self.model.tokenize
        feats = prep(list(texts))
        feats = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
        return self.model(feats)["sentence_embedding"].float()

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if self.finetuned_digest is not None:
            return super().embed(texts, batch_size)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vecs, dtype=np.float32)

    def save(self, path: str | Path) -> None:
        self.model.save(str(path), safe_serialization=True)


class HFEncoder(PromptEncoder):
    """Any `AutoModel` checkpoint, pooled over its last hidden states."""

    kind = "hf"

    def __init__(
        self,
        name: str,
        path: str,
        *,
        pooling: Pooling = "auto",
        max_length: int = 256,
        device: str = "cpu",
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ):
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise EncoderError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        self.name = name
        self.max_length = max_length
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            torch_dtype = resolve_dtype(dtype, resolve_device(device)) or "auto"
            self.model = AutoModel.from_pretrained(
                path, dtype=torch_dtype, trust_remote_code=trust_remote_code
            ).to(device)
        except Exception as exc:
            raise EncoderError(f"cannot load encoder {name} from {path}: {exc}") from exc
        if self.tokenizer.pad_token is None:
            # Decoder LMs often ship without a pad token; padding is masked out anyway.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if pooling == "auto":
            archs = getattr(config, "architectures", None) or []
            causal = any("CausalLM" in a for a in archs) or bool(getattr(config, "is_decoder", False))
            pooling = "last" if causal else "mean"
        self.pooling = pooling
        self.dim = int(getattr(config, "hidden_size", 0) or self.model.config.hidden_size)

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h = hidden.last_hidden_state.float()
        mask = batch["attention_mask"]
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        if self.pooling == "cls":
            return h[:, 0]
        # Last real token, for left or right padding alike: the highest position whose mask is 1.
        pos = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * pos).argmax(dim=1)
        return h[torch.arange(h.shape[0], device=h.device), last]

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))


def load_encoder(
    name: str = DEFAULT_ENCODER,
    *,
    pooling: Pooling = ROUTER.pooling,
    max_length: int = ROUTER.max_length,
    device: str = "cpu",
    trust_remote_code: bool = False,
    path: str | None = None,
    dtype: str = "auto",
) -> PromptEncoder:
    """Load an encoder by zoo alias, folder or hub id (memoised: one copy per process).

    A sentence-transformers folder with pooling 'auto' loads through sentence-transformers; any
    explicit pooling, or a plain model folder, loads through AutoModel. `path` overrides where the
    weights come from (a fine-tuned copy) while `name` stays the recorded identity. `dtype`: the
    rule every model follows (persyn.util.hardware; `auto`: bf16 on CPUs with native bf16, else float32).
    """
    return _load_encoder_cached(name, pooling, max_length, device, trust_remote_code, path, dtype)


@functools.lru_cache(maxsize=4)
def _load_encoder_cached(
    name: str,
    pooling: str,
    max_length: int,
    device: str,
    trust_remote_code: bool,
    path: str | None,
    dtype: str,
) -> PromptEncoder:
    where = path or resolve_encoder_path(name)
    if pooling == "auto" and _is_sentence_transformers_folder(where):
        return SentenceTransformerEncoder(name, where, max_length=max_length, device=device, dtype=dtype)
    return HFEncoder(
        name,
        where,
        pooling=pooling,  # type: ignore[arg-type]
        max_length=max_length,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )


# ----------------------------------------------------------------------------- embedding cache


@runtime_checkable
class EmbeddingCache(Protocol):
    """Where embeddings live between calls. The pipeline backs this with its run store."""

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among `keys` (missing keys are simply absent)."""
        ...

    def put(self, items: Mapping[str, np.ndarray]) -> None: ...


class MemoryEmbeddingCache:
    """The default cache: a dict in this process."""

    def __init__(self) -> None:
        self._data: dict[str, np.ndarray] = {}

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return {k: self._data[k] for k in keys if k in self._data}

    def put(self, items: Mapping[str, np.ndarray]) -> None:
        self._data.update({k: np.asarray(v, dtype=np.float32) for k, v in items.items()})

    def __len__(self) -> int:
        return len(self._data)


def embedding_key(encoder_key: str, prompt: str) -> str:
    return f"{encoder_key}#{digest(prompt, 32)}"


def embed_prompts(
    encoder: PromptEncoder,
    prompts: Sequence[str],
    cache: EmbeddingCache | None = None,
    *,
    batch_size: int = 64,
    chunk_size: int = 4096,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """n x dim float32 embeddings; only prompts missing from `cache` are encoded (then stored).

    `progress(n_done)` is called after each chunk of newly encoded prompts.
    """
    keys = [embedding_key(encoder.key, p) for p in prompts]
    out = np.zeros((len(prompts), encoder.dim), dtype=np.float32)
    found = cache.get(keys) if cache is not None else {}
    todo: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in found:
            out[i] = found[k]
        else:
            todo.setdefault(k, i)
    missing = list(todo.items())
    for s in range(0, len(missing), chunk_size):
        chunk = missing[s : s + chunk_size]
        vecs = encoder.embed([prompts[i] for _, i in chunk], batch_size=batch_size)
        if cache is not None:
            cache.put({k: v for (k, _), v in zip(chunk, vecs, strict=True)})
        for (_, i), v in zip(chunk, vecs, strict=True):
            out[i] = v
        if progress is not None:
            progress(len(chunk))
    # Duplicated prompts share one encoding: copy it to every later occurrence.
    for i, k in enumerate(keys):
        if k in todo and todo[k] != i:
            out[i] = out[todo[k]]
    return out
