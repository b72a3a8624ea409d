"""The papers' setups against this book's profiles: the introduction's table "The paper and this book" and chapter
7's counterpart for Wu & Hilton.

The papers' numbers are facts of the papers, typed once here with their source (:data:`REA_PAPER`,
:data:`WH_PAPER`). The book's side is computed: the run knobs from the profile tables (:mod:`rea.book.profiles`),
the model from the embedded GGUF file's header (:func:`rea.lm.embedded_summary`), the prompt's tokens from the
model's tokenizer, and the token cost of a TPS run from its config (:func:`tps_tokens_per_observable`), so the
table changes when a profile does::

    table, numbers = paper_vs_book(load_tokenizer(), embedded_summary())   # the introduction's table
    wh_vs_book(B, profile, distribution, model_facts(lm))                  # chapter 7's
"""

from __future__ import annotations

from rea.book.profiles import PROFILES, chapter_settings
from rea.book.typeset import sci

PAPER_PROMPT = "Once upon a time, in a big forest, there lived a rhinoc"
"""The prompt of [REA] (its Figs. 3–5), which chapters 1–6 and 8 use by default."""

REA_PAPER: dict = {
    "model": "TinyStories-8M (GPT-Neo, 8 M parameters)",
    "parameters": 8e6,  # nominal, as its name says
    "weights": "unquantised checkpoint (roneneldan/TinyStories-8M)",
    "tokenizer": "GPT-Neo BPE, 50,257 tokens",
    "prompt_tokens": 16,
    "length": 100,
    "n_chains": 10,     # "≈10 chains per sign"
    "n_biases": 10,
    "n_steps": 40_000,
    "n_direct": 200_000,  # MBAR's λ = 0 state; its direct histograms have ≈4·10⁶ samples
    "tokens_stated": 4e8,  # "≈4·10⁸ tokens per observable"
}
"""[REA] (Dorman, Gillman et al., ICML 2026), §3.4 and §5: the setup of its TPS experiments."""

WH_PAPER: dict = {
    "models": "GELU transformers with 1, 2 and 4 layers (d = 512, 48,262 tokens; Nanda & Bloom 2022)",
    "distributions": "8: hex, camel, colon, if, caps, english, spanish, icl",
    "n_targets": 256,
    "budget": 2 ** 16,
    "p_window": (1e-9, 1e-5),
    "ground_truth_samples": 2 ** 32,
}
"""[WH] (Wu & Hilton, ICLR 2025), §4 and Table 1: per model and input distribution, 256 targets drawn among the
tokens whose ground-truth probability (from 2^32 samples) lies in [10⁻⁹, 10⁻⁵], each estimated with 2^16 model
calls."""


def typeset_count(n: int, power_of_two: bool = False) -> str:
    """An integer for a table, ``40,000``; with ``power_of_two`` a power of two as ``2¹⁶ = 65,536``."""
    n = int(n)
    if power_of_two and n >= 2 and n & (n - 1) == 0:
        sup = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
        return f"2{str(n.bit_length() - 1).translate(sup)} = {n:,}"
    return f"{n:,}"


def typeset_amount(x: float) -> str:
    """A large count for a table: ``18,336`` below 10⁴, ``4.2 × 10⁸`` (:func:`rea.book.sci`) from there on."""
    return f"{x:,.0f}" if abs(x) < 1e4 else sci(x)


def tps_tokens_per_observable(config, n_direct: int) -> float:
    """Tokens one observable costs: a TPS run of ``config`` (a :class:`rea.tps.TPSConfig`) plus ``n_direct`` direct
    samples of its length L.

    Per direction with K biases, each of the J chains starts from one direct sample (L tokens) and makes K·N moves
    (N = ``config.n_steps`` per bias) of E[L − c] = (L + 1)/2 tokens each (:func:`rea.tps.expected_move_tokens`):
    ``Σ_directions J·(L + K·N·(L + 1)/2) + N₀·L``. Replica exchange adds no model calls.
    """
    from rea.tps import expected_move_tokens

    if int(n_direct) != n_direct or n_direct < 0:
        raise ValueError(f"n_direct must be a non-negative integer, got {n_direct!r}")
    L, J, N = config.length, config.n_chains, config.n_steps
    biases = [lams for lams in (config.lambdas_pos, config.lambdas_neg) if lams]
    if any(isinstance(lams, str) for lams in biases):
        raise ValueError("config must have explicit bias grids (an 'auto' ladder's size is known after its pilots)")
    moves = sum(J * (L + len(lams) * N * expected_move_tokens(L)) for lams in biases)
    return float(moves + n_direct * L)


def book_numbers(profile: str, tokenizer, prompt: str = PAPER_PROMPT) -> dict:
    """The numbers of one profile's column of the introduction's table: the shared TPS runs of chapters 3–6.

    Returns the knobs of :data:`rea.book.profiles.SHARED_TPS` at ``profile`` plus ``"n_biases"`` and ``"tokens"``
    (per observable, ``{"ari": ..., "logprob": ...}``, :func:`tps_tokens_per_observable`) and ``"prompt_tokens"``
    (the prompt's length under ``tokenizer``, the model's: ``rea.lm.load_tokenizer()``).
    """
    from rea.book.runs import real_tps_configs

    B = chapter_settings("tps", profile)
    configs = real_tps_configs(B, prompt, seed=0)
    return {**B, "n_biases": {obs: len(c.lambdas_pos) for obs, c in configs.items()},
            "tokens": {obs: tps_tokens_per_observable(c, B["n_direct"]) for obs, c in configs.items()},
            "prompt_tokens": len(tokenizer(prompt, add_special_tokens=False)["input_ids"])}


def differences_from_paper(numbers: dict) -> list[str]:
    """Which of [REA]'s run knobs a profile's :func:`book_numbers` does not match (empty: the paper's setup)."""
    p = REA_PAPER
    same = {"completion length": numbers["length"] == p["length"],
            "chains per sign": numbers["n_chains"] == p["n_chains"],
            "biases per sign": set(numbers["n_biases"].values()) == {p["n_biases"]},
            "steps per bias": numbers["n_steps"] == p["n_steps"],
            "direct samples": numbers["n_direct"] == p["n_direct"]}
    return [name for name, ok in same.items() if not ok]


def _per_observable(values: dict, fmt) -> str:
    """``"3"`` when ARI and Log-Prob agree, else ``"3 / 4"``."""
    ari, logprob = fmt(values["ari"]), fmt(values["logprob"])
    return ari if ari == logprob else f"{ari} / {logprob}"


def book_column(numbers: dict, tokenizer, summary: dict) -> dict:
    """One profile's column of :func:`paper_vs_book` (row key -> text) from :func:`book_numbers`, the model's
    ``tokenizer`` and its file's ``summary`` (:func:`rea.lm.embedded_summary`)."""
    return {"model": f"SmolLM2-135M-Instruct (Llama, {sci(summary['parameters'] / 1e6, 3)} M parameters)",
            "weights": _weights_text(summary), "tokenizer": f"SmolLM2 BPE, {len(tokenizer):,} tokens",
            "prompt_tokens": f"{numbers['prompt_tokens']}", "length": f"{numbers['length']}",
            "n_chains": f"{numbers['n_chains']}", "n_biases": _per_observable(numbers["n_biases"], str),
            "n_steps": typeset_count(numbers["n_steps"]), "n_direct": typeset_count(numbers["n_direct"]),
            "tokens": _per_observable(numbers["tokens"], typeset_amount)}


def _weights_text(summary: dict) -> str:
    """``"Q4_1 GGUF (210 tensors; embedding Q8_0, tied), dequantised to float32"`` from a GGUF summary."""
    nominal = summary["file_type"].replace("MOSTLY_", "")
    n_nominal = summary["tensor_types"].get(nominal, (0, 0))[0]
    tied = ", tied to the unembedding" if summary["tied"] else ""
    return (f"{nominal} GGUF ({n_nominal} matrices; embedding {summary['embedding_type']}{tied}), "
            f"dequantised to float32")


ROWS_REA = {"model": "Model", "weights": "Weights", "tokenizer": "Tokenizer",
            "prompt_tokens": "Prompt tokens (the paper's prompt)", "length": "Completion length L (tokens)",
            "n_chains": "Chains per sign J", "n_biases": "Biases per sign K (ARI / Log-Prob)",
            "n_steps": "Steps per bias N", "n_direct": "Direct samples N₀ (MBAR's λ = 0)",
            "tokens": "Tokens per observable (ARI / Log-Prob)"}
"""Row key -> label of the introduction's table."""


def paper_column() -> dict:
    """[REA]'s column of :func:`paper_vs_book`: :data:`REA_PAPER` typeset; its tokens per observable as the paper
    states them, next to the count :func:`tps_tokens_per_observable` makes of its setup."""
    from types import SimpleNamespace

    p = REA_PAPER
    setup = SimpleNamespace(length=p["length"], n_chains=p["n_chains"], n_steps=p["n_steps"],
                            lambdas_pos=range(p["n_biases"]), lambdas_neg=range(p["n_biases"]))
    counted = tps_tokens_per_observable(setup, p["n_direct"])
    return {"model": p["model"], "weights": p["weights"], "tokenizer": p["tokenizer"],
            "prompt_tokens": f"{p['prompt_tokens']}", "length": f"{p['length']}", "n_chains": f"≈{p['n_chains']}",
            "n_biases": f"{p['n_biases']}", "n_steps": typeset_count(p["n_steps"]),
            "n_direct": typeset_count(p["n_direct"]),
            "tokens": f"≈{sci(p['tokens_stated'], 1)} (counted as here: {sci(counted)})"}


def paper_vs_book(tokenizer, summary: dict, prompt: str = PAPER_PROMPT):
    """The introduction's table: rows :data:`ROWS_REA`, columns [REA] and one per profile of :data:`PROFILES`
    (``"quick (the book)"`` for the default). Returns ``(DataFrame, {profile: book_numbers(...)})``."""
    import pandas as pd

    numbers = {profile: book_numbers(profile, tokenizer, prompt) for profile in PROFILES}
    columns = {"Dorman, Gillman et al. (2026)": paper_column()}
    for profile, nums in numbers.items():
        columns[f"{profile} (the book)" if profile == "quick" else profile] = book_column(nums, tokenizer, summary)
    table = pd.DataFrame({name: [col[key] for key in ROWS_REA] for name, col in columns.items()},
                         index=list(ROWS_REA.values()))
    return table, numbers


ROWS_WH = {"models": "Models", "distributions": "Input distributions", "n_targets": "Targets per model",
           "budget": "Model calls per method and target", "p_window": "Target probabilities p",
           "hits": "Expected direct hits p × calls", "ground_truth_samples": "Ground truth: samples per model"}
"""Row key -> label of chapter 7's table."""


def _wh_cells(models: str, distributions: str, targets: str, budget: int, p_window, truth: int) -> dict:
    """One column of :func:`wh_vs_book`, row key -> text."""
    lo, hi = p_window
    return {"models": models, "distributions": distributions, "n_targets": targets,
            "budget": typeset_count(budget, power_of_two=True), "p_window": f"{sci(lo, 1)} to {sci(hi, 1)}",
            "hits": f"{sci(lo * budget)} to {sci(hi * budget)}",
            "ground_truth_samples": typeset_count(truth, power_of_two=True)}


def model_facts(lm) -> dict:
    """``{"name", "layers", "hidden", "vocab"}`` of a loaded Hugging Face model (:func:`rea.lm.load_model`), for
    :func:`wh_vs_book`; the embedded model is named "SmolLM2-135M"."""
    from rea.lm import DEFAULT_MODEL

    cfg = lm.model.config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.num_layers
    return {"name": "SmolLM2-135M" if lm.name == DEFAULT_MODEL else str(lm.name), "layers": int(layers),
            "hidden": int(cfg.hidden_size), "vocab": int(cfg.vocab_size)}


def wh_column(settings: dict, distribution: str, model: dict, others=()) -> dict:
    """One profile's column of :func:`wh_vs_book` from chapter 7's ``settings`` (:func:`chapter_settings` of
    ``"single-token"``), the run's input ``distribution`` (and the ``others`` the chapter also builds) and the
    truncated ``model`` (:func:`model_facts`)."""
    depths = ", ".join(str(d) for d in settings["depths"])
    also = f" (also built: {', '.join(others)})" if others else ""
    return _wh_cells(f"{model['name']}, its first {depths} of {model['layers']} layers "
                     f"(d = {model['hidden']}, {model['vocab']:,} tokens)", f"1: {distribution}{also}",
                     f"{settings['n_targets']} per depth (+ 1 for tuning)", settings["budget"], settings["p_window"],
                     settings["ground_truth_samples"])


def wh_vs_book(settings: dict, profile: str, distribution: str, model: dict, others=()):
    """Chapter 7's table: rows :data:`ROWS_WH`, columns [WH] and one per profile of :data:`PROFILES` from the
    profile tables, the ``profile`` of this run shown with its ``settings`` (overrides included) as
    ``"<profile> (this run)"``; ``model`` is :func:`model_facts` of the chapter's model. Returns a DataFrame."""
    import pandas as pd

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    p = WH_PAPER
    columns = {"Wu & Hilton (2025)": _wh_cells(p["models"], p["distributions"], f"{p['n_targets']} per model and "
                                             "distribution", p["budget"], p["p_window"], p["ground_truth_samples"])}
    for name in PROFILES:
        knobs = settings if name == profile else chapter_settings("single-token", name)
        columns[f"{name} (this run)" if name == profile else name] = wh_column(knobs, distribution, model, others)
    return pd.DataFrame({name: [col[key] for key in ROWS_WH] for name, col in columns.items()},
                        index=list(ROWS_WH.values()))
