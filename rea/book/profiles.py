"""The one home of every chapter's budget: per profile, every knob a chapter's run depends on, named.

A *profile* sizes a chapter's run: ``"ci"`` (seconds, for the golden tests), ``"quick"`` (CPU minutes, the book
as published) or ``"paper"`` (GPU, the paper's scale). :data:`SETTINGS` maps each chapter to the tables that hold its
knobs, one value per profile; :func:`chapter_settings` returns a chapter's knobs for a profile with the chapter's
explicit parameters applied on top::

    B = chapter_settings("tps", profile, n_steps=n_steps)   # n_steps None: the profile's value

Which knob lives where:

* a knob whose value depends on the profile, or that several chapters share, or that no parameter exposes (how
  often a TPS run is checkpointed, whether it stores tokens, the bootstrap's replica count), lives here, once;
  a chapter's parameter of the same name defaults to ``None`` ("from the profile") and overrides it when set;
* a knob that is the same at every profile and belongs to one chapter (a proposal's temperature, the confidence
  level, histogram bins) lives only in that chapter's parameters cell.

Chapters 3–6 share their TPS runs (:func:`rea.book.runs.cached_tps` caches them by config), so their run knobs are
one table, :data:`SHARED_TPS`, not four copies: the same profile and the same overrides give the same cached run.
"""

from __future__ import annotations

import copy

from rea.single_token import temperature_grid

PROFILES = ("ci", "quick", "paper")
"""The profiles, smallest first."""

THEORY: dict[str, dict] = {
    # real-model completions: length L and how many; toy LM: length of the exact results and direct samples
    "ci": dict(length=12, n_samples=12, toy_length=60, toy_samples=2_000),
    "quick": dict(length=32, n_samples=128, toy_length=200, toy_samples=20_000),
    "paper": dict(length=100, n_samples=4_096, toy_length=200, toy_samples=1_000_000),
}
"""Chapter 1 (theory): samples of the real model and of the toy LM."""

SAMPLING: dict[str, dict] = {
    # real model: length, direct samples (and as many from its proposal); toy LM: length, samples per method
    "ci": dict(length=12, n_samples=12, toy_length=30, toy_samples=2_000),
    "quick": dict(length=32, n_samples=128, toy_length=50, toy_samples=20_000),
    "paper": dict(length=100, n_samples=10_000, toy_length=100, toy_samples=1_000_000),
}
"""Chapter 2 (sampling): direct and proposal samples of the real model and of the toy LM."""

SHARED_TPS: dict[str, dict] = {
    # real model: length L, chains J per direction, steps N per bias, |λ| grids per observable (both signs), direct
    # samples N₀ (the λ = 0 state), checkpoint cadence in steps (bookkeeping: results do not depend on it), token
    # snapshots every this many steps (None: none), the replica-exchange runs' moves between swap rounds; toy LM
    # (observable Repeats): the same knobs, prefixed toy_
    "ci": dict(length=8, n_chains=2, n_steps=4, lambdas_ari=[0.05], lambdas_logprob=[0.01], n_direct=16,
               checkpoint_every=50, record_tokens_every=1, exchange_every=2,
               toy_length=20, toy_lambdas=[0.3, 0.6], toy_chains=3, toy_steps=40, toy_samples=2_000,
               toy_checkpoint_every=10_000, toy_record_tokens_every=None),
    "quick": dict(length=24, n_chains=4, n_steps=40, lambdas_ari=[0.03, 0.1, 0.3],
                  lambdas_logprob=[0.01, 0.03, 0.1], n_direct=256, checkpoint_every=50, record_tokens_every=1,
                  exchange_every=4,
                  toy_length=30, toy_lambdas=[0.3, 0.6, 0.9], toy_chains=6, toy_steps=120, toy_samples=20_000,
                  toy_checkpoint_every=10_000, toy_record_tokens_every=None),
    "paper": dict(length=100, n_chains=10, n_steps=40_000,
                  lambdas_ari=[0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2],
                  lambdas_logprob=[0.0005, 0.001, 0.002, 0.003, 0.005, 0.007, 0.01, 0.015, 0.02, 0.03],
                  n_direct=200_000, checkpoint_every=40_000, record_tokens_every=1, exchange_every=10,
                  toy_length=100, toy_lambdas=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], toy_chains=10,
                  toy_steps=4_000, toy_samples=200_000, toy_checkpoint_every=10_000, toy_record_tokens_every=None),
}
"""The TPS runs (real model: ARI and Log-Prob; toy LM: Repeats) and direct samples chapters 3–6 share."""

SHARED_MBAR: dict[str, dict] = {
    # bootstrap replicas over chains (the paper: 100); biases whose Gelman-Rubin statistic reaches gr_threshold
    # are dropped (rea.tps.tps_mbar)
    "ci": dict(n_boot=100, gr_threshold=1.1),
    "quick": dict(n_boot=100, gr_threshold=1.1),
    "paper": dict(n_boot=100, gr_threshold=1.1),
}
"""The MBAR estimates over the shared runs that chapters 5 and 6 make (:func:`rea.tps.tps_mbar`)."""

SINGLE_TOKEN: dict[str, dict] = {
    # decoder layers kept, evaluation targets per depth, model calls per method and target, brute-force samples per
    # depth, the window of target probabilities, the tuning temperatures of ITGIS/MHIS, the exactly enumerated case
    # (hex positions, targets), the synthetic Gaussian case (samples of its truth, activations fitted)
    "ci": dict(depths=[1], n_targets=4, budget=2 ** 7, ground_truth_samples=2 ** 12, p_window=(2e-3, 3e-2),
               tune_grid=[1.0, 25.0], exact_length=1, exact_targets=2, gauss_truth=200_000, gauss_acts=2_048),
    "quick": dict(depths=[1, 2], n_targets=5, budget=2 ** 10, ground_truth_samples=2 ** 15, p_window=(1e-3, 1e-2),
                  tune_grid=list(temperature_grid(0, 12)[::4]), exact_length=2, exact_targets=3,
                  gauss_truth=2_000_000, gauss_acts=4_096),
    "paper": dict(depths=[1, 2, 4, 30], n_targets=16, budget=2 ** 16, ground_truth_samples=2 ** 26,
                  p_window=(1e-6, 1e-4), tune_grid=list(temperature_grid(-4, 12)[::2]), exact_length=2,
                  exact_targets=8, gauss_truth=20_000_000, gauss_acts=65_536),
}
"""Chapter 7 (single-token): the Wu & Hilton comparison scaled to a CPU."""

SWEEP: dict[str, dict] = {
    # real model: how many word-prefixes of the prompt are swept, and the method of their cells (direct sampling on
    # a CPU, where one TPS cell at the quick budget takes minutes; TPS + MBAR at paper scale); toy LM: how many
    # word-prefixes of its prompt (TPS + MBAR, checked against exact tails). The cells' budgets are SHARED_TPS's.
    "ci": dict(n_prompts=2, method="direct", toy_prompts=2),
    "quick": dict(n_prompts=4, method="direct", toy_prompts=4),
    "paper": dict(n_prompts=12, method="tps", toy_prompts=8),
}
"""Chapter 8 (sweep): the prompts of the sweeps and the method of the real-model cells."""

DEEPER: dict[str, dict] = {
    # toy LM: the automatic ladder's run (completion length, target a of P(Repeats ≥ a), ladders = pilot chains,
    # moves per bias, direct samples), SMC's particles and replicates per toy tail; real model: completion length,
    # SMC's particles and replicates, importance samples
    "ci": dict(toy_length=12, ladder_target=3.0, ladder_chains=4, ladder_steps=30, toy_samples=500,
               smc_particles=200, smc_replicates=4, length=8, lm_particles=16, lm_replicates=4, lm_samples=64),
    "quick": dict(toy_length=20, ladder_target=16.0, ladder_chains=8, ladder_steps=120, toy_samples=2_000,
                  smc_particles=1_000, smc_replicates=10, length=24, lm_particles=64, lm_replicates=6,
                  lm_samples=384),
    "paper": dict(toy_length=20, ladder_target=16.0, ladder_chains=16, ladder_steps=4_000, toy_samples=200_000,
                  smc_particles=4_000, smc_replicates=20, length=100, lm_particles=1_024, lm_replicates=16,
                  lm_samples=16_384),
}
"""Chapter 9 (deeper): the automatic ladder and SMC on the toy LM, SMC against importance sampling on the real
model."""

SETTINGS: dict[str, tuple[dict[str, dict], ...]] = {
    "theory": (THEORY,),
    "sampling": (SAMPLING,),
    "tilting": (SHARED_TPS,),
    "tps": (SHARED_TPS,),
    "mbar": (SHARED_TPS, SHARED_MBAR),
    "errors": (SHARED_TPS, SHARED_MBAR),
    "single-token": (SINGLE_TOKEN,),
    "sweep": (SHARED_TPS, SHARED_MBAR, SWEEP),
    "deeper": (DEEPER,),
}
"""Chapter short name -> the tables of its knobs (merged in order; a knob is in exactly one of them)."""


def profile_knobs(chapter: str, profile: str) -> dict:
    """The knobs of ``chapter`` at ``profile``: its tables' rows for that profile merged, as a fresh (deep) copy.

    Raises a one-line ``ValueError`` for an unknown chapter or profile.
    """
    if chapter not in SETTINGS:
        raise ValueError(f"chapter must be one of {', '.join(SETTINGS)}, got {chapter!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    merged: dict = {}
    for table in SETTINGS[chapter]:
        merged.update(table[profile])
    return copy.deepcopy(merged)


def chapter_settings(chapter: str, profile: str, **overrides) -> dict:
    """The knobs of ``chapter`` at ``profile`` (:func:`profile_knobs`) with the ``overrides`` that are not None.

    A chapter passes its parameters of the same names, which default to ``None`` ("from the profile"), so
    ``rea run tps -p n_steps 200`` changes that knob alone. An override that is not a knob of the chapter is a
    one-line ``ValueError`` (a misspelt name would otherwise be ignored).
    """
    knobs = profile_knobs(chapter, profile)
    unknown = sorted(set(overrides) - set(knobs))
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))}: not a knob of chapter {chapter!r}; "
                         f"its knobs: {', '.join(knobs)}")
    knobs.update({key: value for key, value in overrides.items() if value is not None})
    return knobs
