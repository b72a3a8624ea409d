r"""Has a TPS run equilibrated? Each bias's chain mean of φ against an independent SMC estimate of E_λ[φ]
[METHODS §11].

Gelman–Rubin compares chains with each other: annealed chains that are all stuck alike pass it (R̂ < 1.1 far from
the tilted law), and correct chains that merely move slowly fail it. Equilibrium is judged here against an estimate
that does not come from the chains: SMC on prefixes (:func:`rea.smc.smc_tail`) at the same bias λ_k. Per bias:

* chain mean m_c = (1/J) Σ_j ȳ_j over the J chains' post-burn-in means ȳ_j (burn-in as :func:`rea.tps.tps_mbar`);
  its standard error (``chain_se="chains"``, default) SE_c = sd_j(ȳ_j)/√J, from the spread of the per-chain means
  -- honest for independent chains whatever their autocorrelation, and small when the chains are stuck alike;
  or (``chain_se="inefficiency"``) SE_c = √(g s²/N) with g the statistical inefficiency of φ pooled over the chains
  (:func:`rea.stats.diagnostics.statistical_inefficiency_multiple`), s² the pooled variance and N the pooled steps;
* SMC mean: per replicate r the self-normalised (ratio) estimate m_r = Σ_i W_i φ_i, W_i = w_i / Σ_l w_l, of its
  final particles (:class:`rea.smc.Replicate` ``log_w``, ``phi``): consistent, with an O(1/N) bias; pooled over R
  independent replicates, m_s = (1/R) Σ_r m_r with SE_s = sd_r(m_r)/√R;
* the gap z = (m_c − m_s)/√(SE_c² + SE_s²) (0 where both the gap and the SEs are 0), ``equilibrated`` = |z| ≤ 3,
  and R̂ as :func:`rea.tps.tps_mbar` computes it (:meth:`rea.tps.mbar.Prepared.gelman_rubin`).

The check costs N·L·R tokens per bias (``tokens``); its table feeds ``tps_mbar(..., keep=table)``.

Measured on the toy (adverb count, L = 20, 8 annealed chains, 60 moves per bias, λ = −0.5 … −3; N = 400, R = 10):
at λ ≤ −1.5 the chains sit 5–27 SE below the exact E_λ[φ] and the check flags them (z −4.7 … −22), where R̂ is
1.5–4.6; at λ = −0.5, −1.0 R̂ = 1.22, 1.35 rejects chains that exact and SMC find right (|z| ≤ 1.1); chains started
from exact draws of p_λ at λ = −2.5: z = −1.2, R̂ = 27.6. No toy configuration tried (1–12 biases, 30–480 moves,
8–128 chains) had R̂ < 1.1 at a bias more than 3 SE off: stuck forward-shooting chains here differ from each other.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from rea.arguments import check_positive_int
from rea.smc.run import smc_tail  # the submodule: rea.smc itself imports rea.tps (its ladder kernel)
from rea.stats import statistical_inefficiency_multiple
from rea.tps.mbar import prepare

__all__ = ["smc_tilted_means", "chain_means", "equilibrium_check", "EQUILIBRIUM_Z"]

EQUILIBRIUM_Z = 3.0
"""A bias is ``equilibrated`` when its chain mean lies within this many combined standard errors of the SMC mean."""

CHAIN_SE = ("chains", "inefficiency")


def replicate_means(replicates) -> np.ndarray:
    """m_r = Σ_i W_i φ_i ``[R]``, W = softmax(log_w), of SMC replicates (:class:`rea.smc.Replicate`, each
    ``log_w`` and ``phi`` ``[N]``): each replicate's ratio estimate of the tilted mean E_λ[φ]."""
    return np.array([np.sum(np.exp(r.log_w - logsumexp(r.log_w)) * r.phi) for r in replicates])


def smc_tilted_means(lm, prompt: str, length: int, observable, lambdas, n_particles: int = 400,
                     n_replicates: int = 10, seed: int = 0, tokens=None, progress: bool = False) -> pd.DataFrame:
    """E_λ[φ] at each bias of ``lambdas`` ``[K]`` by SMC on prefixes (:func:`rea.smc.smc_tail`, ``n_replicates``
    independent runs of ``n_particles``; ``observable`` and ``tokens`` as there, a prefix observable).

    Returns a DataFrame, one row per λ (input order): ``lam``, ``smc_mean`` = (1/R) Σ_r m_r and ``smc_se`` =
    sd_r(m_r)/√R over the replicates' ratio estimates m_r (:func:`replicate_means`), ``smc_tokens`` = N·L·R.
    Every bias uses the same ``seed`` (replicate r's streams are keyed by (seed, r)), so a bias's row does not
    depend on the other biases asked for.

    The ratio estimator's O(1/N) bias shows at strong bias, where few particles reach the tilted law's bulk.
    Measured on the toy (adverb count, L = 20, R = 10, E_λ[φ] = 5.7 / 9.1 / 13.5 at λ = −2 / −2.5 / −3): mean
    z = (m_s − exact)/SE_s of −1.3 / −1.8 / −1.5 with N = 200 (15 repeats), −0.4 / −1.0 / −0.5 with N = 400,
    −0.1 / −0.3 / −0.9 with N = 800 (10 repeats); hence N = 400 by default, more at stronger bias.
    """
    lams = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    if lams.ndim != 1 or lams.size == 0 or not np.all(np.isfinite(lams)):
        raise ValueError(f"lambdas must be a non-empty list of finite biases, got {lambdas!r}")
    if check_positive_int("n_replicates", n_replicates) < 2:
        raise ValueError(f"n_replicates must be ≥ 2 (the SE comes from the spread over replicates), got {n_replicates}")
    rows = []
    for lam in lams:
        res = smc_tail(lm, prompt, length, observable, float(lam), [0.0], n_particles=n_particles,
                       n_replicates=n_replicates, seed=seed, tokens=tokens, progress=progress)
        m = replicate_means(res.replicates)
        rows.append({"lam": float(lam), "smc_mean": m.mean(), "smc_se": m.std(ddof=1) / np.sqrt(m.size),
                     "smc_tokens": res.tokens})
    return pd.DataFrame(rows)


def chain_means(records, burn_in: float = 0.1, chain_se: str = "chains") -> pd.DataFrame:
    """Per bias of TPS ``records`` (:func:`rea.tps.tps_samples` input): ``lam``, ``n_chains``, ``chain_mean`` m_c
    = mean_j ȳ_j over the chains' post-burn-in means, ``chain_se`` (module docstring: ``"chains"`` sd_j(ȳ_j)/√J, or
    ``"inefficiency"`` √(g s²/N)), ``gelman_rubin`` (as :func:`rea.tps.tps_mbar`: NaN with < 2 chains)."""
    if chain_se not in CHAIN_SE:
        raise ValueError(f"chain_se must be one of {CHAIN_SE}, got {chain_se!r}")
    prep = prepare(records, np.zeros(1), burn_in)  # a dummy direct sample: prepare needs a λ = 0 state
    gr = prep.gelman_rubin(np.arange(len(prep.segments)))
    rows = []
    for lam in prep.lambdas:
        series = [s["phi"] for s in prep.segments if s["lam"] == lam]
        ybar = np.array([y.mean() for y in series])
        if chain_se == "chains":
            se = ybar.std(ddof=1) / np.sqrt(ybar.size) if ybar.size > 1 else np.nan
        else:
            pooled = np.concatenate(series)
            g = statistical_inefficiency_multiple(series) if pooled.size > 1 else np.inf
            se = np.sqrt(g * pooled.var(ddof=1) / pooled.size) if np.isfinite(g) else np.inf
        rows.append({"lam": float(lam), "n_chains": ybar.size, "chain_mean": ybar.mean(), "chain_se": se,
                     "gelman_rubin": float(gr[lam])})
    return pd.DataFrame(rows)


def equilibrium_check(records, lm=None, observable=None, smc=None, tokens=None, n_particles: int = 400,
                      n_replicates: int = 10, seed: int = 0, burn_in: float = 0.1, chain_se: str = "chains",
                      z_max: float = EQUILIBRIUM_Z, progress: bool = False) -> pd.DataFrame:
    """Per bias λ_k of a TPS run, the chains' mean of φ against an independent SMC estimate of E_{λ_k}[φ].

    Parameters
    ----------
    records : :class:`rea.tps.TPSResult` (its config gives prompt and length) or a records DataFrame (then pass
        ``smc``)
    lm : the model, to run the SMC; observable : the SMC prefix observable (``"repeats"``, ``"logprob"``,
        ``"count"`` with ``tokens``, ``"ari"``, or a prefix callable, :func:`rea.smc.prefix_observable`); default:
        the run's observable name (a TPS callable such as a token count has no prefix form: pass it)
    smc : a table of :func:`smc_tilted_means` (columns ``lam, smc_mean, smc_se``) to reuse instead of running SMC
    n_particles, n_replicates, seed : the SMC runs (per bias); burn_in : as :func:`rea.tps.tps_mbar`
    chain_se : ``"chains"`` (spread of per-chain means) or ``"inefficiency"`` (module docstring)
    z_max : |z| ≤ z_max is ``equilibrated`` (3)

    Returns
    -------
    DataFrame, one row per bias of the records (sorted by λ): ``lam, n_chains, chain_mean, chain_se, smc_mean,
    smc_se, z, gelman_rubin, equilibrated, smc_tokens``; z = (chain_mean − smc_mean)/√(chain_se² + smc_se²).
    ``df.attrs["tokens"]``: the tokens the check costs, Σ ``smc_tokens`` (a given ``smc`` table's own count, 0 where it
    has no ``smc_tokens`` column).
    """
    chains = chain_means(records, burn_in, chain_se)
    if smc is None:
        config = getattr(records, "config", None)
        if lm is None or config is None:
            raise ValueError("smc: pass a smc_tilted_means table, or a TPSResult and lm to run SMC at its biases")
        obs = observable if observable is not None else config.observable_name
        smc = smc_tilted_means(lm, config.prompt, config.length, obs, chains["lam"].to_numpy(), n_particles,
                               n_replicates, seed, tokens, progress)
    elif not isinstance(smc, pd.DataFrame) or not {"lam", "smc_mean", "smc_se"} <= set(smc.columns):
        raise ValueError("smc must be a DataFrame with columns lam, smc_mean, smc_se (see smc_tilted_means)")
    smc = smc.assign(smc_tokens=smc["smc_tokens"] if "smc_tokens" in smc else 0, lam=smc["lam"].astype(float) + 0.0)
    df = chains.merge(smc[["lam", "smc_mean", "smc_se", "smc_tokens"]], on="lam", how="left")
    missing = df["lam"][df["smc_mean"].isna()].tolist()
    if missing:
        raise ValueError(f"smc: no SMC estimate at biases {missing} of the records")
    gap, se = df["chain_mean"] - df["smc_mean"], np.sqrt(df["chain_se"] ** 2 + df["smc_se"] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        df["z"] = np.where(gap == 0, 0.0, gap / se)
    df["equilibrated"] = np.abs(df["z"]) <= z_max
    df = df[["lam", "n_chains", "chain_mean", "chain_se", "smc_mean", "smc_se", "z", "gelman_rubin", "equilibrated",
             "smc_tokens"]]
    df.attrs["tokens"] = int(df["smc_tokens"].sum())
    return df
