r"""The regeneration half of forward shooting for many chains through one decoder: continuous batching, or lockstep.

A move of chain b with cut c keeps x_{<c} and draws x'_c, …, x'_{L−1} from p_M (:mod:`rea.tps.move`); token j is
the Gumbel-max draw keyed by the move's uniform ``u[j]`` (:func:`rea.sampling.gumbel_draw`), so a chain's proposal
is a function of its state, its cut and its uniforms only -- the same in either shooter below (up to the float
rounding of a different batch).

Lockstep (:class:`LockstepShooter`, any model): all chains move once per call through
:func:`rea.sampling.regenerate`, which decodes positions min_b c_b, …, L−1 for every row. With uniform cuts a row
does useful work only E[L − c] / E[L − min_b c_b] ≈ ½ of the time (for 16 chains), and each call re-runs the
prompt and the kept prefix x_{<min c} through the model.

Continuous batching (:class:`ContinuousShooter`, decoders with per-row positions: the llama fast decoder and the
toy LM): every row of the batch is on its own move. Per decode step each active row feeds one token at its own
cache position and draws the next token; a row that has drawn x'_{L−1} is handed back (:meth:`advance`), accepted
or rejected by the caller, and its chain's next move starts in that row at once (:meth:`start`). Every decode step
draws one useful token per active row, and computes only those rows (a chain that has finished its run costs nothing).

Keys and values are kept, not recomputed: a store holds, per row, those of the chain's committed state at positions
0, …, P+L−2 (prompt and x_{≤L−2}; P prompt tokens), ``[layers, 2, B, H_kv, P+L−1, d]`` (SmolLM2: 46 kB per row
and token). A move with cut c restores positions < P+c−1 into the row's cache, feeds x_{c−1} (the last prompt token
when c = 0) at position P+c−1 -- which yields the logits of completion position c -- and then feeds its own draws;
an accepted move copies the row's positions P+c−1, …, P+L−2 back to the store (:meth:`accept`). A move of cut c
thus costs exactly L − c decode steps of its row.
"""

from __future__ import annotations

import numpy as np
import torch

from rea.lm.threads import decode_threads
from rea.sampling import gumbel_draw, gumbel_layout, position_noise, regenerate

BATCHING = ("auto", "continuous", "lockstep")
"""How the chains' regenerations share the decoder: ``continuous`` (rows on their own moves, kept keys and values),
``lockstep`` (one move of every chain per decode), ``auto`` (continuous where the decoder supports it)."""

_RECHECK_THREADS = 16
"""Decode steps between two thread-count decisions (:func:`rea.lm.threads.decode_threads`)."""


class LockstepShooter:
    """Regenerations of all started moves as one :func:`rea.sampling.regenerate` batch per :meth:`advance`."""

    def __init__(self, lm, prompt_ids):
        self.lm, self.prompt_ids = lm, list(prompt_ids)
        self.pending: list[tuple] = []

    def start(self, rows, tokens, logp, cut, uniforms) -> None:
        """Queue the moves of ``rows [n]`` from states ``tokens``, ``logp`` ``[n, L]`` with cuts ``[n]`` and
        uniforms ``[n, L]``."""
        self.pending.append((np.asarray(rows), tokens, logp, np.asarray(cut), uniforms))

    def advance(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Regenerate every queued move -> (rows ``[n]``, proposals' tokens ``[n, L]``, per-token log p_M
        ``[n, L]``)."""
        if not self.pending:
            raise RuntimeError("no move started: call start before advance")
        rows, tokens, logp, cut, uniforms = (np.concatenate(parts) for parts in zip(*self.pending))
        self.pending = []
        new_tokens, new_logp, _ = regenerate(self.lm, self.prompt_ids, tokens, cut, uniforms, logp)
        return rows, new_tokens, new_logp

    def accept(self, rows) -> None:
        """Nothing to keep: every call recomputes the kept prefixes."""

    def swap(self, pairs) -> None:
        """Nothing to swap (see :meth:`accept`)."""


class ContinuousShooter:
    """Continuous batching of forward-shooting moves; see the module docstring.

    Parameters
    ----------
    lm : the model; ``decoder`` one of its decoders for B rows that has ``step_rows`` (per-row positions).
    prompt_ids : the prompt's P token ids.
    tokens, logp : the B chains' committed states ``[B, L]`` (row b is chain b of the caller).
    """

    def __init__(self, lm, decoder, prompt_ids, tokens, logp):
        self.lm, self.decoder, self.device = lm, decoder, lm.device
        batch, self.length = tokens.shape
        self.n_prompt = len(prompt_ids)
        self.prompt_last = int(prompt_ids[-1])
        dev = self.device
        prompt = torch.tensor(list(prompt_ids), dtype=torch.long, device=dev).expand(batch, -1)
        states = torch.as_tensor(np.asarray(tokens)[:, : self.length - 1], dtype=torch.long, device=dev)
        decoder.prefill(torch.cat([prompt, states], dim=1))
        self.store = decoder.cache_store(self.n_prompt + self.length - 1)
        self.tokens = torch.zeros(batch, self.length, dtype=torch.long, device=dev)
        self.logp = torch.zeros(batch, self.length, dtype=torch.float64, device=dev)
        self.uniforms = torch.zeros(batch, self.length, dtype=torch.float64, device=dev)
        self.cut = np.zeros(batch, dtype=np.int64)
        self.positions = torch.full((batch,), self.n_prompt - 1, dtype=torch.long, device=dev)
        self.feed = torch.full((batch,), self.prompt_last, dtype=torch.long, device=dev)
        self.active = torch.zeros(batch, dtype=torch.bool, device=dev)
        self.steps = 0

    def start(self, rows, tokens, logp, cut, uniforms) -> None:
        """Start the moves of ``rows [n]`` from their committed states ``tokens``, ``logp`` ``[n, L]`` with cuts
        ``[n]`` and uniforms ``[n, L]``: restore each row's kept keys and values, feed x_{c−1} at P+c−1 next."""
        rows, cut = np.asarray(rows, dtype=np.int64), np.asarray(cut, dtype=np.int64)
        dev = self.device
        index = torch.as_tensor(rows, device=dev)
        states = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=dev)
        self.tokens[index] = states
        self.logp[index] = torch.as_tensor(np.asarray(logp), dtype=torch.float64, device=dev)
        self.uniforms[index] = torch.as_tensor(np.asarray(uniforms), dtype=torch.float64, device=dev)
        self.cut[rows] = cut
        cut_t = torch.as_tensor(cut, device=dev)
        before_cut = states.gather(1, (cut_t - 1).clamp(min=0)[:, None]).squeeze(1)
        self.feed[index] = torch.where(cut_t == 0, self.prompt_last, before_cut)
        self.positions[index] = self.n_prompt + cut_t - 1
        self.decoder.restore_rows(self.store, rows.tolist(), (self.n_prompt + cut - 1).tolist())
        self.active[index] = True

    def advance(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode steps until at least one move is complete -> (its rows ``[n]``, proposals' tokens ``[n, L]``,
        per-token log p_M ``[n, L]``, kept prefix included)."""
        if not bool(self.active.any()):
            raise RuntimeError("no move started: call start before advance")
        rows_all = torch.arange(len(self.active), device=self.device)
        while True:
            if self.steps % _RECHECK_THREADS == 0:
                n_threads = decode_threads(self.device)
                if n_threads != torch.get_num_threads():
                    torch.set_num_threads(n_threads)
            self.steps += 1
            # only the rows on a move are computed: rows whose chain has finished its run (replica-exchange ladders
            # end before annealed chains) or waits for its next move cost nothing
            some_idle = not bool(self.active.all())
            rows = rows_all[self.active] if some_idle else rows_all
            logits = self.decoder.step_rows(self.feed[rows], self.positions[rows], rows if some_idle else None)
            drawn = (self.positions[rows] - self.n_prompt + 1).clamp(0, self.length - 1)  # completion index drawn now
            lp = torch.log_softmax(logits.float(), dim=-1)
            width = sum(gumbel_layout(lp.shape[-1]))
            noise = position_noise(self.uniforms[rows].gather(1, drawn[:, None]).squeeze(1), width)
            tok = gumbel_draw(lp, noise)
            self.tokens[rows, drawn] = tok
            self.logp[rows, drawn] = lp.gather(1, tok[:, None]).squeeze(1).double()
            self.feed[rows] = tok
            self.positions[rows] += 1
            finished = rows[drawn == self.length - 1]
            if len(finished):
                self.active[finished] = False
                return (finished.cpu().numpy(), self.tokens[finished].cpu().numpy(),
                        self.logp[finished].cpu().numpy())

    def accept(self, rows) -> None:
        """The moves of ``rows`` were accepted: their proposals' keys and values become the committed ones."""
        rows = np.asarray(rows, dtype=np.int64)
        self.decoder.save_rows(self.store, rows.tolist(), (self.n_prompt + self.cut[rows] - 1).tolist(),
                               self.n_prompt + self.length - 1)


    def swap(self, pairs) -> None:
        """Rows a and b of each pair swapped their committed states (replica exchange): swap their stored keys and
        values."""
        for a, b in pairs:
            self.decoder.swap_rows(self.store, a, b)


def make_shooter(lm, prompt_ids, tokens, logp, batching: str = "auto"):
    """The shooter for B chains in states ``tokens``, ``logp`` ``[B, L]`` (see :data:`BATCHING`)."""
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    if batching != "lockstep":
        batch, length = np.shape(tokens)
        decoder = lm.decoder(batch, max_length=len(prompt_ids) + length)
        if hasattr(decoder, "step_rows"):
            return ContinuousShooter(lm, decoder, prompt_ids, tokens, logp)
        if batching == "continuous":
            raise ValueError(f"batching='continuous' needs a decoder with per-row positions (the llama fast decoder "
                             f"or the toy LM); {type(decoder).__name__} of {lm.name!r} has none: use 'auto'")
    return LockstepShooter(lm, prompt_ids)
