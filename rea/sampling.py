"""Batched ancestral sampling with exact log-probabilities [REA §3.1].

A completion x_{t+1:T} of a prompt x_{1:t} is drawn token by token at temperature 1 (no top-k/top-p), and its
log-probability is the sum of the per-token terms

    log p_M(x_{t+1:T} | x_{1:t}) = Σ_{τ=t}^{T-1} log p_M(x_{τ+1} | x_{1:τ}),

which the sampler returns per token (``logp[N, L]``). A proposal sampler draws from a modified next-token
distribution q(· | x_{1:τ}) instead (temperature T, additive logit bias) and also returns the exact ``logq[N, L]``,
so that importance weights w = p_M(x)/q(x) = exp(Σ logp − Σ logq) are exact.

Reproducibility: completion i of a call with seed s uses the uniforms of ``numpy.random.default_rng([s, i])``, one
per position; each keys the Gumbel noise of the Gumbel-max draw at that position (:func:`position_noise`), so the
tokens depend on (seed, i) only -- not on the batch size or device split -- and a float rounding difference of the
model on another machine changes a token only when it swaps the two best perturbed scores.

All sequences in a batch advance in lockstep, one position at a time, through the model's KV-cache
:class:`rea.lm.models.Decoder`. The TPS forward-shooting move (:func:`regenerate`) uses the same loop: positions
before a chain's cut point are forced to its current tokens, positions from the cut on are sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from rea.arguments import check_positive_int
from rea.lm.threads import decode_threads, torch_threads

# --------------------------------------------------------------------------------------------- proposals


class Proposal:
    """The model itself: q = p_M. Subclasses map next-token logits ``[B, V]`` to proposal logits ``[B, V]``."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def describe(self) -> dict:
        return {"kind": "model"}


class Temperature(Proposal):
    """q(v | ·) ∝ p_M(v | ·)^{1/T}: logits divided by ``temperature`` (> 0)."""

    def __init__(self, temperature: float):
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def __call__(self, logits):
        return logits / self.temperature

    def describe(self):
        return {"kind": "temperature", "temperature": self.temperature}


class LogitBias(Proposal):
    """q(v | ·) ∝ p_M(v | ·) e^{b·1[v ∈ S]}: add ``bias`` to the logits of the tokens ``token_ids``."""

    def __init__(self, token_ids, bias: float):
        ids = sorted({int(t) for t in token_ids})
        if not ids:
            raise ValueError("token_ids must name at least one token to bias")
        if not np.isfinite(bias):
            raise ValueError(f"bias must be a finite number, got {bias!r}")
        self.token_ids, self.bias = ids, float(bias)
        self._index = None

    def __call__(self, logits):
        if self._index is None or self._index.device != logits.device:
            if max(self.token_ids) >= logits.shape[-1] or min(self.token_ids) < 0:
                raise ValueError(f"token_ids must lie in [0, {logits.shape[-1]}), got {self.token_ids[:5]}...")
            self._index = torch.tensor(self.token_ids, device=logits.device)
        out = logits.clone()
        out[:, self._index] += self.bias
        return out

    def describe(self):
        return {"kind": "logit_bias", "bias": self.bias, "token_ids": self.token_ids}


# --------------------------------------------------------------------------------------------- samples


@dataclass
class Samples:
    """N completions of one prompt.

    Attributes
    ----------
    prompt : str; prompt_ids : list[int] (length P)
    tokens : int64 ``[N, L]`` completion tokens (after EOS, when stopping at EOS: the EOS id as padding)
    logp : float64 ``[N, L]`` per-token log p_M (0 on padding)
    logq : float64 ``[N, L]`` per-token log q of the proposal that drew them (equals logp for the model itself)
    lengths : int64 ``[N]`` completion lengths (L unless stopped at EOS)
    texts : list[str] decoded completions (without the prompt)
    meta : dict -- model, proposal, seed, length, ...
    """

    prompt: str
    prompt_ids: list[int]
    tokens: np.ndarray
    logp: np.ndarray
    logq: np.ndarray
    lengths: np.ndarray
    texts: list[str]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def log_weights(self) -> np.ndarray:
        """log w = log p_M(x) − log q(x) per completion ``[N]`` (0 for samples from the model itself)."""
        return self.logp.sum(1) - self.logq.sum(1)

    def __getitem__(self, index) -> Samples:
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Samples(
            self.prompt, self.prompt_ids, self.tokens[idx], self.logp[idx], self.logq[idx], self.lengths[idx],
            [self.texts[i] for i in idx], dict(self.meta),
        )

    @staticmethod
    def concat(parts: list[Samples]) -> Samples:
        first = parts[0]
        return Samples(
            first.prompt, first.prompt_ids,
            np.concatenate([p.tokens for p in parts]), np.concatenate([p.logp for p in parts]),
            np.concatenate([p.logq for p in parts]), np.concatenate([p.lengths for p in parts]),
            [t for p in parts for t in p.texts], dict(first.meta),
        )


# --------------------------------------------------------------------------------------------- validation




def encode_prompt(lm, prompt: str, length: int) -> list[int]:
    """Tokenise ``prompt`` and check that prompt + ``length`` completion tokens fit the context window."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    length = check_positive_int("length", length)
    ids = lm.encode(prompt)
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens; give a prompt with some text")
    if len(ids) + length > lm.context_length:
        raise ValueError(
            f"prompt ({len(ids)} tokens) + length ({length}) exceeds the model's context window of "
            f"{lm.context_length} tokens; shorten the prompt or the completion"
        )
    return ids


def auto_batch_size(lm, total_length: int, cap: int | None = None) -> int:
    """Largest batch whose decoding state fits a quarter of free memory (half on CUDA), at most ``cap``.

    ``cap`` defaults to 64 on CPU (throughput saturates there) and 1024 on CUDA.
    """
    per_seq = max(1, lm.bytes_per_sequence(total_length))
    if lm.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(lm.device)
        budget, cap = free // 2, cap or 1024
    else:
        import psutil

        budget, cap = psutil.virtual_memory().available // 4, cap or 64
    return int(max(1, min(cap, budget // per_seq)))


def sequence_uniforms(seed: int, index: np.ndarray, length: int) -> np.ndarray:
    """Uniforms ``[len(index), length]``: row k from ``numpy.random.default_rng([seed, index[k]])``."""
    return np.stack([np.random.default_rng([int(seed), int(i)]).random(length) for i in index])


# --------------------------------------------------------------------------------------------- the decode loop


# splitmix64 (Steele, Lea & Flood 2014) as signed int64 constants: torch has no uint64 arithmetic, and int64
# multiplication wraps modulo 2^64 exactly like uint64 multiplication does.
_GAMMA = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic: mask the sign copies away)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's output function: a bijection of 64-bit words whose output passes BigCrush."""
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


def position_noise(u: torch.Tensor, vocab_size: int) -> torch.Tensor:
    r"""Standard Gumbel noise ``[B, V]`` for one position of B rows, keyed by that position's uniform ``u[B]``.

    The uniform u = k·2^{-53} (numpy's ``random()``) names a 53-bit key k; token v gets the v-th output of the
    splitmix64 counter stream started at mix(k): z_v = mix(mix(k) + (v+1)·γ), u_v = (⌊z_v / 2^{11}⌋ + ½)·2^{-53},
    g_v = −log(−log u_v). Integer arithmetic only up to u_v, so the noise is the same on every machine and device.
    """
    key = (u.double() * 2.0**53).long()  # exact: u is a multiple of 2^-53
    counter = torch.arange(1, vocab_size + 1, dtype=torch.long, device=u.device) * _GAMMA
    z = _mix64(_mix64(key)[:, None] + counter[None, :])
    uv = (_shift_right(z, 11).double() + 0.5) * 2.0**-53
    return -torch.log(-torch.log(uv))


_ONE_LEVEL_VOCAB = 1024
"""Vocabularies up to this size are drawn with one level (one block of all V tokens): fewer tensor operations."""


def gumbel_layout(vocab_size: int) -> tuple[int, int]:
    """(block size s, number of blocks n_b) of the Gumbel draw, which needs n_b + s noise values per position:
    s = ⌈√V⌉, n_b = ⌈V/s⌉ (two levels), or s = V, n_b = 1 for V ≤ 1024 (one level)."""
    if vocab_size <= _ONE_LEVEL_VOCAB:
        return vocab_size, 1
    size = math.isqrt(vocab_size - 1) + 1
    return size, -(-vocab_size // size)


def gumbel_draw(logq: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    r"""A token ``[B]`` drawn from q = softmax(logq ``[B, V]``) by a two-level Gumbel-max with ``noise[B, n_b + s]``.

    The vocabulary is cut into n_b blocks of s = ⌈√V⌉ tokens (:func:`gumbel_layout`). With g = ``noise`` (from
    :func:`position_noise`), the block is b* = argmax_b (log Q_b + g_b), Q_b = Σ_{v∈b} q(v), and the token within
    it v* = argmax_{v∈b*} (log q(v) + g_{n_b + (v mod s)}). Gumbel-max makes each step exact: P(b*) = Q_b and
    P(v* | b*) = q(v)/Q_{b*}, so P(v*) = q(v); zero-probability tokens (log q = −inf) are never chosen.

    Why not the inverse CDF with one uniform: a token changes whenever float rounding moves any of the V
    cumulative sums across u, which on another CPU (log-probs differ by ~2e-5) happened in 11 of 256 completions
    of 24 tokens on SmolLM2 (0 of 256 with this draw). Here a token changes only when rounding swaps the two best
    perturbed scores of a level, a chance of the order of the rounding itself. Two levels cost 2√V noise values
    per row and position instead of V.
    """
    batch, vocab = logq.shape
    size, n_blocks = gumbel_layout(vocab)
    if n_blocks == 1:  # one level: v* = argmax_v (log q(v) + g_{1+v})
        return (logq.double() + noise[:, 1:]).argmax(dim=-1)
    blocks = torch.nn.functional.pad(logq, (0, n_blocks * size - vocab), value=-math.inf).view(batch, n_blocks, size)
    block = (torch.logsumexp(blocks, dim=-1).double() + noise[:, :n_blocks]).argmax(dim=-1)
    within = blocks[torch.arange(batch, device=logq.device), block]
    return block * size + (within.double() + noise[:, n_blocks:]).argmax(dim=-1)


_RECHECK_THREADS = 16
"""Positions between two thread-count decisions within one decode (:func:`rea.lm.threads.decode_threads`)."""

_NOISE_CHUNK = 1 << 22
"""Noise values computed at once in the decode loop (positions are grouped up to this many B·P·(n_b + s))."""


@dataclass
class _DecodeState:
    """What the lockstep decode fills in: tokens (int64) and per-token log p_M, log q (float64), all ``[B, L]``, and
    ``done[B]``, rows that have ended at an EOS (with ``stop_at_eos``)."""

    tokens: torch.Tensor
    logp: torch.Tensor
    logq: torch.Tensor
    done: torch.Tensor

    @classmethod
    def empty(cls, batch: int, length: int, device) -> _DecodeState:
        return cls(torch.empty(batch, length, dtype=torch.long, device=device),
                   torch.zeros(batch, length, dtype=torch.float64, device=device),
                   torch.zeros(batch, length, dtype=torch.float64, device=device),
                   torch.zeros(batch, dtype=torch.bool, device=device))


def _keep_forced_prefix(lm, prompt_ids, state: _DecodeState, forced, forced_t, forced_logp, start: int) -> None:
    """Positions ``< start`` (= min cut) are the forced tokens; their log p_M is copied from ``forced_logp`` or
    teacher-forced, and log q = log p_M there (a kept prefix is not drawn from the proposal)."""
    state.tokens[:, :start] = forced_t[:, :start]
    if forced_logp is None:
        forced_logp = score(lm, prompt_ids, np.asarray(forced)[:, :start], batch_size=state.tokens.shape[0])
    state.logp[:, :start] = torch.as_tensor(np.asarray(forced_logp)[:, :start], device=state.logp.device)
    state.logq[:, :start] = state.logp[:, :start]


def _end_rows_at_prefix_eos(state: _DecodeState, start: int, eos: int) -> None:
    """A row whose kept prefix already holds EOS has ended there: EOS padding with log-prob 0 after its first EOS."""
    is_eos = state.tokens[:, :start] == eos
    after = is_eos.long().cumsum(1) - is_eos.long() > 0  # strictly after the row's first EOS
    state.tokens[:, :start].masked_fill_(after, eos)
    state.logp[:, :start].masked_fill_(after, 0.0)
    state.logq[:, :start].masked_fill_(after, 0.0)
    state.done = is_eos.any(1)


def _draw_positions(lm, decoder, logits, u, state: _DecodeState, start: int, proposal, forced_t, cut_t,
                    stop_at_eos: bool) -> None:
    """Positions ``start..L−1`` one step at a time: x_τ = argmax_v (log q(v) + G_τ(v)) with Gumbel noise G keyed by
    the uniform ``u[b, τ]`` (forced where τ < cut), log p_M and log q recorded, EOS padding after a row ends."""
    batch, length = state.tokens.shape
    eos = lm.eos_token_id
    width = sum(gumbel_layout(logits.shape[-1]))
    chunk = max(1, _NOISE_CHUNK // (batch * width))
    for pos in range(start, length):
        if (pos - start) % _RECHECK_THREADS == _RECHECK_THREADS - 1:  # long decodes follow the machine's load
            n_threads = decode_threads(state.tokens.device)
            if n_threads != torch.get_num_threads():
                torch.set_num_threads(n_threads)
        if (pos - start) % chunk == 0:  # the Gumbel noise of the next `chunk` positions in one pass
            upto = min(length, pos + chunk)
            noise = position_noise(u[:, pos:upto].reshape(-1), width).view(batch, upto - pos, width)
        lp = torch.log_softmax(logits.float(), dim=-1)
        lq = lp if type(proposal) is Proposal else torch.log_softmax(proposal(logits.float()), dim=-1)
        tok = gumbel_draw(lq, noise[:, (pos - start) % chunk])
        if forced_t is not None:
            tok = torch.where(pos < cut_t, forced_t[:, pos], tok)
        if stop_at_eos:
            tok = torch.where(state.done, torch.full_like(tok, eos), tok)
        state.tokens[:, pos] = tok
        live = ~state.done
        state.logp[:, pos] = torch.where(live, lp.gather(1, tok[:, None]).squeeze(1).double(), 0.0)
        state.logq[:, pos] = torch.where(live, lq.gather(1, tok[:, None]).squeeze(1).double(), 0.0)
        if stop_at_eos:
            state.done |= tok == eos
            if bool(state.done.all()):
                state.tokens[:, pos + 1 :] = eos
                break
        if pos + 1 < length:
            logits = decoder.step(tok)


@torch.inference_mode()
def _decode(lm, prompt_ids, uniforms, proposal=None, forced=None, cut=None, forced_logp=None, stop_at_eos=False):
    """Lockstep decode of B sequences of length L = ``uniforms.shape[1]``.

    Position τ of row b is forced to ``forced[b, τ]`` when τ < ``cut[b]`` and sampled from the proposal with
    uniform ``uniforms[b, τ]`` otherwise. Returns int64 tokens, float64 logp and logq ``[B, L]`` and lengths ``[B]``
    (numpy). With ``stop_at_eos`` a row ends at its first EOS: later positions hold EOS with log-probs 0.
    The forced positions before ``min(cut)`` go through the prefill in one pass; their log-probs are copied from
    ``forced_logp[B, L]`` (the per-token log p_M of ``forced``), or teacher-forced when it is not given.
    """
    with torch_threads(decode_threads(lm.device)):
        return _decode_rows(lm, prompt_ids, uniforms, proposal, forced, cut, forced_logp, stop_at_eos)


def _decode_rows(lm, prompt_ids, uniforms, proposal, forced, cut, forced_logp, stop_at_eos):
    """:func:`_decode` with the thread count set."""
    proposal = proposal or Proposal()
    batch, length = uniforms.shape
    dev = lm.device
    u = torch.as_tensor(uniforms, device=dev)
    start, forced_t, cut_t = 0, None, None
    if forced is not None:
        forced_t = torch.as_tensor(np.asarray(forced), dtype=torch.long, device=dev)
        cut_t = torch.as_tensor(np.asarray(cut), dtype=torch.long, device=dev)
        start = int(np.min(cut))
    prefix = torch.tensor(prompt_ids, dtype=torch.long, device=dev).expand(batch, -1)
    if start:
        prefix = torch.cat([prefix, forced_t[:, :start]], dim=1)
    decoder = lm.decoder(batch)
    logits = decoder.prefill(prefix)
    state = _DecodeState.empty(batch, length, dev)
    if start:
        _keep_forced_prefix(lm, prompt_ids, state, forced, forced_t, forced_logp, start)
        if stop_at_eos:
            _end_rows_at_prefix_eos(state, start, lm.eos_token_id)
    _draw_positions(lm, decoder, logits, u, state, start, proposal, forced_t, cut_t, stop_at_eos)
    if stop_at_eos:
        is_eos = (state.tokens == lm.eos_token_id).cpu().numpy()
        first = np.where(is_eos.any(1), is_eos.argmax(1) + 1, length)
    else:
        first = np.full(batch, length)
    return state.tokens.cpu().numpy(), state.logp.cpu().numpy(), state.logq.cpu().numpy(), first.astype(np.int64)


def _texts(lm, tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
    return [lm.decode(row[:n]) for row, n in zip(tokens, lengths)]


def sample(
    lm,
    prompt: str,
    n: int,
    length: int,
    seed: int = 0,
    proposal: Proposal | None = None,
    batch_size: int | None = None,
    stop_at_eos: bool = False,
    progress: bool = True,
) -> Samples:
    """Draw ``n`` completions of ``length`` tokens from ``proposal`` (default: the model at temperature 1).

    Returns :class:`Samples` with tokens ``[n, length]``, per-token log p_M and log q. EOS is an ordinary token
    unless ``stop_at_eos``; then a completion ends at its first EOS (included) and is padded.
    """
    return sample_streams(lm, prompt, [(seed, n)], length, proposal, batch_size, stop_at_eos, progress)[0]


def sample_streams(lm, prompt: str, streams, length: int, proposal: Proposal | None = None,
                   batch_size: int | None = None, stop_at_eos: bool = False, progress: bool = True) -> list[Samples]:
    """:func:`sample` for several seeds at once: ``streams`` is a list of (seed, n), and the result's entry i equals
    ``sample(lm, prompt, n_i, length, seed_i, ...)`` (completion k of seed s uses the uniforms of (s, k) whatever
    the batch), while the decode runs all streams' completions as shared batches."""
    streams = [(seed, check_positive_int("n", n)) for seed, n in streams]
    prompt_ids = encode_prompt(lm, prompt, length)
    keys = np.array([(seed, k) for seed, n in streams for k in range(n)], dtype=np.int64)  # [Σn, 2]
    if batch_size is None:
        batch_size = auto_batch_size(lm, len(prompt_ids) + length)
    batch_size = check_positive_int("batch_size", batch_size)
    parts = []
    with tqdm(total=len(keys), desc="sampling", unit="seq", disable=not progress) as bar:
        for lo in range(0, len(keys), batch_size):
            chunk = keys[lo : lo + batch_size]
            uniforms = np.stack([sequence_uniforms(seed, np.array([k]), length)[0] for seed, k in chunk])
            tokens, logp, logq, lengths = _decode(lm, prompt_ids, uniforms, proposal, stop_at_eos=stop_at_eos)
            parts.append(Samples(prompt, prompt_ids, tokens, logp, logq, lengths, _texts(lm, tokens, lengths)))
            bar.update(len(chunk))
    every = Samples.concat(parts)
    out, lo = [], 0
    for seed, n in streams:
        one = every[lo : lo + n]
        one.meta = {
            "model": lm.name, "prompt": prompt, "n": n, "length": length, "seed": seed,
            "proposal": (proposal or Proposal()).describe(), "stop_at_eos": stop_at_eos,
        }
        out.append(one)
        lo += n
    return out


@torch.inference_mode()
def score(lm, prompt: str | list[int], tokens, lengths=None, batch_size: int | None = None,
          proposal: Proposal | None = None) -> np.ndarray:
    """Teacher-forced per-token log-probabilities of given completions: float64 ``[N, L]``, zero past ``lengths``.

    ``proposal=None`` scores under the model, log p_M(x_τ | x_{<τ}); a :class:`Proposal` scores under q, its
    logits map applied before the log-softmax exactly as :func:`sample` does (needed to evaluate a sample's weight
    under another proposal, e.g. in a mixture). One forward pass over prompt + completion per batch;
    ``logits[:, P−1+τ]`` scores completion token τ.
    """
    tokens = np.array(tokens, dtype=np.int64)  # a copy: torch refuses read-only arrays (e.g. Parquet columns)
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"tokens must be a 2-D array [N, L] with L ≥ 1, got shape {tokens.shape}")
    prompt_ids = encode_prompt(lm, prompt, tokens.shape[1]) if isinstance(prompt, str) else list(prompt)
    n, length = tokens.shape
    batch_size = batch_size or auto_batch_size(lm, len(prompt_ids) + length)
    p = len(prompt_ids)
    out = np.zeros((n, length))
    with torch_threads(decode_threads(lm.device)):
        for lo in range(0, n, batch_size):
            chunk = torch.as_tensor(tokens[lo : lo + batch_size], device=lm.device)
            ids = torch.cat([torch.tensor(prompt_ids, device=lm.device).expand(len(chunk), -1), chunk], dim=1)
            logits = lm.logits(ids)[:, p - 1 : p - 1 + length].float()
            if proposal is not None and type(proposal) is not Proposal:
                logits = proposal(logits.reshape(-1, logits.shape[-1])).reshape(logits.shape)
            out[lo : lo + len(chunk)] = (
                torch.log_softmax(logits, -1).gather(2, chunk[..., None]).squeeze(2).double().cpu().numpy()
            )
    if lengths is not None:
        out[np.arange(length)[None, :] >= np.asarray(lengths)[:, None]] = 0.0
    return out


def _check_cuts(tokens, cut, logp=None) -> tuple[np.ndarray, np.ndarray]:
    """``tokens [B, L]``, ``cut [B]`` as int64, cuts in [0, L), ``logp`` None or ``[B, L]``, else a ValueError."""
    tokens, cut = np.asarray(tokens, dtype=np.int64), np.asarray(cut, dtype=np.int64)
    if tokens.ndim != 2 or cut.shape != (tokens.shape[0],):
        raise ValueError(f"tokens must be [B, L] and cut [B]; got {tokens.shape} and {cut.shape}")
    if (cut < 0).any() or (cut >= tokens.shape[1]).any():
        raise ValueError(f"cut points must lie in [0, {tokens.shape[1]}) (L = completion length)")
    if logp is not None and np.shape(logp) != tokens.shape:
        raise ValueError(f"logp must have the shape of tokens {tokens.shape}, got {np.shape(logp)}")
    return tokens, cut


def regenerate_from(lm, prompt_ids, tokens, cut, uniforms, proposal: Proposal, logp=None):
    """:func:`regenerate` drawing the suffix from ``proposal`` -> ``(tokens, logp, logq)`` ``[B, L]`` (log q of the
    drawn positions; log p_M at the kept ones). Fixed-length completions (no EOS handling)."""
    tokens, cut = _check_cuts(tokens, cut, logp)
    return _decode(lm, prompt_ids, uniforms, proposal, forced=tokens, cut=cut, forced_logp=logp)[:3]


def regenerate(lm, prompt_ids, tokens, cut, uniforms, logp=None, stop_at_eos: bool = False):
    """The TPS forward-shooting move for B chains at once: keeps ``tokens[b, :cut[b]]`` and redraws positions
    ``cut[b]..L−1`` from p_M (temperature 1) with the given ``uniforms[B, L]`` (only positions ≥ cut are used).
    ``logp[B, L]``, the per-token log p_M of the current ``tokens``, saves re-scoring the kept prefix (its terms are
    unchanged); without it the prefix is teacher-forced. Returns ``(new_tokens[B, L], logp[B, L], lengths[B])``,
    ``logp`` being the per-token log p_M of the whole new completion, kept prefix included. With ``stop_at_eos`` a
    row whose kept prefix already holds EOS stays ended: what follows its first EOS becomes EOS padding with
    log-prob 0, as in :func:`sample`, and ``lengths`` ends it there.
    """
    tokens, cut = _check_cuts(tokens, cut, logp)
    new, new_logp, _, lengths = _decode(lm, prompt_ids, uniforms, forced=tokens, cut=cut, forced_logp=logp,
                                        stop_at_eos=stop_at_eos)
    return new, new_logp, lengths
