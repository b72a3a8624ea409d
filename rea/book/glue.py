"""Chapter helpers waiting for their home in the package (the book imports them from :mod:`rea.book`).

* :func:`score_proposal` -- teacher-forced log q(x) of given completions under any proposal (needed to evaluate
  every sample under every mixture component, [REA §3.3]).
* :func:`max_run` -- the longest run of one repeated token per completion.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.inference_mode()
def score_proposal(lm, prompt_ids, tokens, proposal=None, batch_size: int = 256) -> np.ndarray:
    """Per-token log q(x_τ | x_{<τ}) ``[N, L]`` of completions ``tokens[N, L]`` under ``proposal`` (teacher forced).

    ``proposal=None`` is the model itself (log p_M). One forward pass per batch; ``logits[:, P−1+τ]`` scores
    completion token τ, and ``proposal`` maps those logits before the log-softmax, exactly as the sampler does.
    """
    from rea.sampling import Proposal

    proposal = proposal or Proposal()
    tokens = np.asarray(tokens, dtype=np.int64)
    n, length = tokens.shape
    p = len(prompt_ids)
    out = np.zeros((n, length))
    for lo in range(0, n, batch_size):
        chunk = torch.as_tensor(tokens[lo : lo + batch_size], device=lm.device)
        ids = torch.cat([torch.tensor(list(prompt_ids), device=lm.device).expand(len(chunk), -1), chunk], dim=1)
        logits = lm.logits(ids)[:, p - 1 : p - 1 + length].float()
        flat = proposal(logits.reshape(-1, logits.shape[-1])).reshape(logits.shape)
        out[lo : lo + len(chunk)] = (
            torch.log_softmax(flat, -1).gather(2, chunk[..., None]).squeeze(2).double().cpu().numpy()
        )
    return out


def max_run(tokens) -> np.ndarray:
    """Longest run of one repeated token per completion: int ``[N]`` for tokens ``[N, L]`` (1 = no repeats)."""
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    best = np.ones(len(tokens), dtype=np.int64)
    cur = np.ones(len(tokens), dtype=np.int64)
    for t in range(1, tokens.shape[1]):
        same = tokens[:, t] == tokens[:, t - 1]
        cur = np.where(same, cur + 1, 1)
        best = np.maximum(best, cur)
    return best
