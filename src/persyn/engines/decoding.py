"""The decode loop: left-padded batch in, one token list per row out, finished rows leave the batch.

``model.generate`` keeps every row in the batch until the last one finishes: a row that ended at
token 20 of 512 is still pushed through every layer, as padding, for the 492 steps that follow.
Teachers' answers vary a lot in length, so on CPU that waste is often most of the work. Here a row
that produces an end token, or whose text reaches a stop string, is dropped from the batch and
its cache entries with it.

Dropping rows changes which rows are batched together, so a row's tokens stay the same only
where results do not depend on batch composition: on CPU with the batch-invariant attention
(attention.py), which the engine uses by default there. Without it (GPU default), texts already
depend on the batch as with ``model.generate``. ``min_rows=2`` keeps a finished row along as a
passenger when one row is left, so that a lone row never switches to matrix-vector kernels.

The loop makes the same model calls as transformers' greedy search (position ids from the mask,
one new token per step, logits of the last position in float32, logits processors, argmax), so a
row's tokens equal ``model.generate``'s for the same attention; tests check it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from transformers import LogitsProcessorList


def _cache_keyword(model) -> str:
    """transformers 5.24 renamed ``past_key_values`` (forward argument and output) to ``cache``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


@torch.inference_mode()
def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    stop_ids: set[int],
    processors: LogitsProcessorList | None = None,
    stopped: Callable[[list[int]], bool] | None = None,
    min_rows: int = 1,
) -> list[list[int]]:
    """Decode ``input_ids`` (left-padded, shape (B, T)) and return each row's new tokens, ending
    with its stop token if it produced one. ``stopped(tokens)`` (optional) says whether a row's
    tokens so far end its answer (stop strings). Rows are argmax-decoded after ``processors``
    (sampling comes in as Gumbel noise there)."""
    processors = processors or LogitsProcessorList()
    n = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    rows = list(range(n))  # the original index of each row of the live batch
    done = [False] * n
    cache_kw = _cache_keyword(model)
    logits_to_keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    with_positions = _accepts(model, "position_ids")  # every transformers decoder; remote code may not

    seqs, mask = input_ids, attention_mask
    positions = mask.long().cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 1)  # padding positions are masked; the value is transformers'
    step_ids, step_positions, cache = input_ids, positions, None
    for _ in range(max_new_tokens):
        inputs = {cache_kw: cache} if cache is not None else {}
        if with_positions:
            inputs["position_ids"] = step_positions
        outputs = model(input_ids=step_ids, attention_mask=mask, use_cache=True, **inputs, **logits_to_keep)
        cache = getattr(outputs, cache_kw)
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)
        del outputs
        tokens = processors(seqs, logits).argmax(dim=-1)
        for row, token in zip(rows, tokens.tolist(), strict=True):
            if done[row]:
                continue  # a passenger
            out[row].append(token)
            done[row] = token in stop_ids or (stopped is not None and stopped(out[row]))
        live = [i for i, row in enumerate(rows) if not done[row]]
        if not live:
            break
        if len(live) < len(rows):
            if len(live) < min_rows:  # keep finished rows along so that the batch stays min_rows big
                live += [i for i in range(len(rows)) if i not in live][: min_rows - len(live)]
                live.sort()
            if len(live) < len(rows):
                index = torch.tensor(live, device=seqs.device)
                cache.batch_select_indices(index)
                for proc in processors:  # processors with per-row state follow their rows
                    if hasattr(proc, "select_rows"):
                        proc.select_rows(live)
                rows = [rows[i] for i in live]
                seqs, mask, tokens, positions = seqs[index], mask[index], tokens[index], positions[index]
        step_ids = tokens[:, None]
        step_positions = positions[:, -1:] + 1
        positions = step_positions  # only the last position is needed from now on
        seqs = torch.cat([seqs, step_ids], dim=-1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
    return out
