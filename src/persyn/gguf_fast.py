"""GGUF conversion through transformers' own loader, faster and with one persyn progress bar (used
by `zoo._convert_gguf`).

For the zoo's architectures (llama, gemma3, qwen2) transformers loads a GGUF file through its legacy
path, `load_gguf_checkpoint`, which parses the whole file with gguf-py's `GGUFReader` three times
(the tokenizer's config, the model's config, the weights). Profiled on 2 cores of an AMD EPYC,
cold cache (docs/models.md): most of a conversion went to that parse, one small numpy
`memmap` view per vocabulary string (Gemma: 262K), then to gguf-py's numpy dequantisation and to
building gguf's tensor-name map once per submodule. `faster_gguf_loading()` changes only how fast
those run, never what they return:

* one parse per file: the reader is built once and reused by the three calls, and reads through a
  plain ``ndarray`` view of the map (the ``memmap`` subclass costs a Python call per slice);
* the metadata-only call (`return_tensors=False`, made twice) is computed once per file;
* gguf's tensor-name map is built once per (architecture, layer count);
* the quantised types transformers' torch kernels cover (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K...) are
  dequantised with them, after a bit-for-bit check against gguf-py on the first tensor of each type
  in the file (a type that differs keeps gguf-py's numpy path).

Each patch is skipped when the installed transformers/gguf lack what it replaces: the conversion
then runs at the old speed and gives the same folder.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["faster_gguf_loading", "gguf_progress"]


def _plain_reader_class():
    from gguf import GGUFReader

    class PlainReader(GGUFReader):
        """gguf-py's reader, reading through a plain ndarray view of its memmap (same values)."""

        _itemsizes: dict[Any, int] = {}

        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self.__dict__["_plain"] = self.data.view(np.ndarray)
            size = self._itemsizes.get(dtype)
            if size is None:
                size = self._itemsizes[dtype] = int(np.dtype(dtype).itemsize)
            count = int(count)
            arr = plain[offset : offset + size * count].view(dtype=dtype)[:count]
            order = self.byte_order if override_order is None else override_order
            return arr.view(arr.dtype.newbyteorder(order))

    return PlainReader


def _torch_dequantizer(original):
    """gguf.dequantize(data, qtype) with transformers' torch kernels where they agree bit for bit."""
    import torch

    try:
        from transformers.integrations.gguf.dequant import GGML_BLOCK
        from transformers.integrations.gguf.dequant import dequantize as torch_dequantize
    except ImportError:
        return original
    verdict: dict[int, bool] = {}

    def dequantize(data: np.ndarray, qtype) -> np.ndarray:
        kind = int(qtype)
        if kind not in GGML_BLOCK or verdict.get(kind) is False or data.dtype != np.uint8:
            return original(data, qtype)
        elems, nbytes = GGML_BLOCK[kind]
        shape = (*data.shape[:-1], data.shape[-1] // nbytes * elems)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a read-only map: torch warns, and we never write to it
            flat = torch.from_numpy(data).reshape(-1)
        out = torch_dequantize(flat, kind, torch.float32).reshape(shape).numpy()
        if kind not in verdict:
            reference = original(data, qtype)
            verdict[kind] = reference.shape == out.shape and np.array_equal(
                reference.view(np.uint32), out.view(np.uint32)
            )
            if not verdict[kind]:
                return reference
        return out

    return dequantize


@contextlib.contextmanager
def faster_gguf_loading() -> Iterator[None]:
    """Within the block, transformers' legacy GGUF loading parses each file once and dequantises
    with torch where that is exact (module docstring). Not thread-safe: conversions hold a lock."""
    try:
        import gguf
        import gguf.tensor_mapping
        import transformers.modeling_gguf_pytorch_utils as legacy
    except ImportError:
        yield
        return
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner, name, value):
        if hasattr(owner, name):
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, value)

    readers: dict[str, Any] = {}
    PlainReader = _plain_reader_class()

    def reader(path, mode="r"):
        key = (str(path), mode)
        if key not in readers:
            readers[key] = PlainReader(path, mode)
        return readers[key]

    original_load = legacy.load_gguf_checkpoint
    metadata: dict[str, dict] = {}

    def load_gguf_checkpoint(gguf_checkpoint_path, return_tensors=False, *args, **kwargs):
        if return_tensors or args or kwargs:
            return original_load(gguf_checkpoint_path, return_tensors, *args, **kwargs)
        key = str(gguf_checkpoint_path)
        if key not in metadata:
            metadata[key] = original_load(gguf_checkpoint_path, return_tensors=False)
        # Callers read and may change "config"; the large vocabulary parts are shared read-only.
        parsed = dict(metadata[key])
        parsed["config"] = copy.deepcopy(parsed["config"])
        return parsed

    try:
        patch(gguf, "GGUFReader", reader)
        patch(legacy, "load_gguf_checkpoint", load_gguf_checkpoint)
        name_map = functools.lru_cache(maxsize=None)(gguf.tensor_mapping.get_tensor_name_map)
        patch(gguf, "get_tensor_name_map", name_map)
        patch(gguf.tensor_mapping, "get_tensor_name_map", name_map)
        patch(gguf, "dequantize", _torch_dequantizer(gguf.dequantize))
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
        readers.clear()


@contextlib.contextmanager
def gguf_progress(label: str) -> Iterator[None]:
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
