"""Token log-probabilities without a full-vocabulary ``log_softmax`` over the whole sequence.

A naive ``model(ids).logits.log_softmax(-1)`` holds batch x length x vocab floats (1.7 GB for
Gemma's 262K vocabulary at 8 x 200 tokens, twice over). Here the LM head runs only on the
positions we score, a few rows at a time, and each row's log-probability is
``logit[target] - logsumexp(logits)`` computed in float32; peak memory is one chunk of logits.

``target_logits`` computes the target logit as a float32 dot product with the target's row of the
head: in bf16 a logit of magnitude 20 is rounded to a multiple of 0.125, which would otherwise
swamp the small differences learnability and judging look at.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# One chunk of float32 logits takes about this much memory (plus the head's own output dtype copy).
DEFAULT_CHUNK_BYTES = 64 * 2**20


def rows_per_chunk(vocab_size: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // (4 * max(1, vocab_size)))


def target_logits(
    hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Linear, softcap: float | None
) -> torch.Tensor:
    """float32 logits of ``targets`` (N,) or (N, K) from hidden states (N, H), without the vocab."""
    weight = head.weight[targets].float()  # (N, H) or (N, K, H)
    h = hidden.float()
    logits = (weight * (h if targets.ndim == 1 else h[:, None, :])).sum(-1)
    if head.bias is not None:
        logits = logits + head.bias[targets].float()
    return softcap_logits(logits, softcap)


def softcap_logits(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """Gemma-2 style final-logit soft-capping, exactly as the model's own forward applies it."""
    if cap is None:
        return logits
    return torch.tanh(logits / cap) * cap


def chunked_token_logprobs(
    rows: torch.Tensor,
    targets: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor] | None,
    chunk_rows: int,
    picked: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(targets[i] | position i) for each row, as float32 of shape (N,).

    ``rows`` is (N, hidden) with ``head`` mapping hidden states to logits, or (N, vocab) logits
    with ``head=None``. Only ``chunk_rows`` rows of logits exist at any time. With ``picked``
    (float32 target logits, see ``target_logits``) the result is ``picked - logsumexp``, else the
    float32 log-softmax of the head's own logits at the targets.
    """
    out = torch.empty(rows.shape[0], dtype=torch.float32, device=rows.device)
    for start in range(0, rows.shape[0], chunk_rows):
        stop = start + chunk_rows
        logits = rows[start:stop] if head is None else head(rows[start:stop])
        at = targets[start:stop, None]
        # log_softmax with a float32 dtype upcasts inside one fused pass (faster than .float() and
        # logsumexp); the normaliser is recovered at the target as logit - log-softmax.
        logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32).gather(-1, at).squeeze(-1)
        if picked is None:
            out[start:stop] = logp
        else:
            lse = logits.gather(-1, at).squeeze(-1).float() - logp
            out[start:stop] = picked[start:stop] - lse
        del logits
    return out
