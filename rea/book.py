"""Small helpers the chapters share: budgets by profile, glued numbers that are also printed, proposal scoring.

* :func:`budget` -- the knobs of a chapter for a profile (``"ci"`` tiny, ``"quick"`` CPU minutes, ``"paper"`` GPU),
  with explicit non-zero parameters winning over the profile's values.
* :func:`record` -- ``myst_nb.glue`` a number for the prose *and* print it rounded (the line nbval compares).
* :func:`record_figure` -- glue a figure for a ``{glue:figure}`` directive and close it.
* :func:`score_proposal` -- teacher-forced log q(x) of given completions under any proposal (needed to evaluate
  every sample under every mixture component, [REA §3.3]).
"""

from __future__ import annotations

import numpy as np
import torch

PROFILES = ("ci", "quick", "paper")


def budget(profile: str, table: dict[str, dict], **explicit) -> dict:
    """``table[profile]`` updated with the ``explicit`` values that are set (not 0, None, "" or []).

    A chapter's parameters use 0 for "from the profile", so ``-p n_samples 5000`` overrides just that knob.
    """
    if profile not in table:
        raise ValueError(f"profile must be one of {sorted(table)}, got {profile!r}")
    out = dict(table[profile])
    for key, value in explicit.items():
        if value not in (0, None, "", [], ()) or isinstance(value, bool):
            out[key] = value
    return out


def record(name: str, value, fmt: str = ".3g", unit: str = "") -> None:
    """Glue ``value`` under ``name`` (quote it with ``{glue:text}`name:.3g```) and print ``name = value``."""
    from myst_nb import glue

    if isinstance(value, np.generic):
        value = value.item()
    glue(name, value, display=False)
    shown = format(value, fmt) if isinstance(value, (int, float, np.integer, np.floating)) else str(value)
    print(f"{name} = {shown}{unit}")


def record_figure(name: str, fig) -> None:
    """Glue a matplotlib figure under ``name`` for ``{glue:figure}`` and close it (so it shows only there)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


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
