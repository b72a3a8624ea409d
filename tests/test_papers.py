"""The papers-vs-book tables (rea.book.papers): computed from the profiles, the model file and its tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from rea.book import papers
from rea.book.profiles import PROFILES, SHARED_TPS, SINGLE_TOKEN, chapter_settings
from rea.tps import TPSConfig, expected_move_tokens, select_shooting_points


def test_expected_move_tokens_is_the_mean_of_the_cut_distribution():
    rng = np.random.default_rng(0)
    for L in (1, 8, 100):
        regenerated = L - select_shooting_points(rng, 200_000, L)
        se = regenerated.std() / np.sqrt(regenerated.size) + 1e-12
        assert abs(regenerated.mean() - expected_move_tokens(L)) < 5 * se
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="length must be a positive integer"):
            expected_move_tokens(bad)


def test_tokens_per_observable_counts_starts_moves_and_direct_samples():
    both = TPSConfig(prompt="x", length=24, lambdas_pos=[0.1, 0.2, 0.3], n_steps=40, n_chains=4, seed=0)
    # 2 directions × 4 chains × (24 starting tokens + 3 biases × 40 moves × 12.5 tokens) + 256 × 24 direct
    assert papers.tps_tokens_per_observable(both, 256) == 2 * 4 * (24 + 3 * 40 * 12.5) + 256 * 24
    one = TPSConfig(prompt="x", length=24, lambdas_pos=[0.1, 0.2, 0.3], lambdas_neg=[], n_steps=40, n_chains=4, seed=0)
    assert papers.tps_tokens_per_observable(one, 0) == papers.tps_tokens_per_observable(both, 0) / 2
    with pytest.raises(ValueError, match="n_direct must be a non-negative integer"):
        papers.tps_tokens_per_observable(both, -1)


def test_the_count_agrees_with_the_papers_statement():
    """[REA] states ≈4·10⁸ tokens per observable; the same count of its setup must land within 10 %."""
    text = papers.paper_column()["tokens"]
    counted = float(text.split("counted as here: ")[1].split(" ×")[0]) * 1e8
    assert abs(counted / papers.REA_PAPER["tokens_stated"] - 1) < 0.1


def test_typeset_count():
    assert papers.typeset_count(40_000) == "40,000"
    assert papers.typeset_count(16) == "16"
    assert papers.typeset_count(2 ** 16, power_of_two=True) == "2¹⁶ = 65,536"
    assert papers.typeset_count(3000, power_of_two=True) == "3,000"
    assert papers.typeset_amount(232) == "232" and papers.typeset_amount(4.2e8) == "4.2 × 10⁸"


@pytest.fixture(scope="module")
def summary():
    from rea.lm import embedded_summary

    return embedded_summary()


@pytest.fixture(scope="module")
def tokenizer():
    from rea.lm import load_tokenizer

    return load_tokenizer()


@pytest.mark.slow
def test_embedded_summary_reads_the_gguf_header(summary):
    assert summary["file"].endswith(".gguf") and summary["file_type"] == "MOSTLY_Q4_1"
    assert summary["architecture"] == "llama" and summary["layers"] == 30 and summary["vocab"] == 49_152
    assert summary["parameters"] == sum(p for _, p in summary["tensor_types"].values())
    assert summary["bits"]["Q4_1"] == 5.0 and summary["bits"]["F32"] == 32.0
    assert summary["tied"] and summary["embedding_type"] in summary["tensor_types"]


@pytest.mark.slow
def test_load_tokenizer_is_the_models(tokenizer, smollm):
    from rea.lm import ModelError, load_tokenizer

    assert tokenizer(papers.PAPER_PROMPT, add_special_tokens=False)["input_ids"] == smollm.encode(papers.PAPER_PROMPT)
    assert len(tokenizer) == smollm.vocab_size
    with pytest.raises(ModelError, match="no Hugging Face tokenizer"):
        load_tokenizer("toy")


@pytest.mark.slow
def test_paper_vs_book_follows_the_profile_tables(tokenizer, summary, monkeypatch):
    table, numbers = papers.paper_vs_book(tokenizer, summary)
    assert table.shape == (len(papers.ROWS_REA), 1 + len(PROFILES))
    quick = SHARED_TPS["quick"]
    assert table.loc[papers.ROWS_REA["length"], "quick (the book)"] == str(quick["length"])
    prompt_ids = tokenizer(papers.PAPER_PROMPT, add_special_tokens=False)["input_ids"]
    assert numbers["quick"]["prompt_tokens"] == len(prompt_ids)
    monkeypatch.setitem(SHARED_TPS, "quick", {**quick, "n_steps": 2 * quick["n_steps"]})
    _, doubled = papers.paper_vs_book(tokenizer, summary)
    assert doubled["quick"]["tokens"]["ari"] > numbers["quick"]["tokens"]["ari"]


@pytest.mark.slow
def test_wh_vs_book_shows_this_runs_settings(smollm):
    B = chapter_settings("single-token", "quick", budget=2 ** 11)
    model = papers.model_facts(smollm)
    assert model == {"name": "SmolLM2-135M", "layers": 30, "hidden": 576, "vocab": 49_152}
    table = papers.wh_vs_book(B, "quick", "hex", model, others=("camel",))
    assert list(table.columns) == ["Wu & Hilton (2025)", "ci", "quick (this run)", "paper"]
    assert table.loc[papers.ROWS_WH["budget"], "quick (this run)"] == "2¹¹ = 2,048"
    assert table.loc[papers.ROWS_WH["budget"], "paper"] == papers.typeset_count(SINGLE_TOKEN["paper"]["budget"], True)
    with pytest.raises(ValueError, match="profile must be one of"):
        papers.wh_vs_book(B, "huge", "hex", model)
