"""The `rea` command line, offline: info, sample to Parquet with provenance, errors as one line."""

import numpy as np
import pytest

from rea.cli import main
from rea.observables import ari
from rea.sampling import score
from rea.storage import load_samples, read_observables, read_provenance


def test_rea_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "default model: smollm2-135m" in out and "cache (REA_CACHE)" in out


def test_rea_sample_writes_parquet_with_provenance(tiny_llama_dir, tiny_llama, tmp_path, capsys):
    out = tmp_path / "s.parquet"
    rc = main(["sample", "--model", tiny_llama_dir, "--prompt", "The sky is", "-n", "6", "--length", "7",
               "--seed", "4", "--device", "cpu", "--out", str(out)])
    assert rc == 0 and out.exists()
    s = load_samples(out)
    assert s.tokens.shape == (6, 7) and s.prompt == "The sky is"
    assert np.abs(score(tiny_llama, s.prompt, s.tokens).sum(1) - s.logp.sum(1)).max() < 1e-4
    prov = read_provenance(out)
    assert prov["model"] == tiny_llama_dir and prov["seed"] == 4 and "torch" in str(prov)
    obs = read_observables(out)
    assert np.allclose(obs["ari"], ari(s)) and np.allclose(obs["logprob"], s.logp.sum(1))


def test_rea_sample_bad_input_is_one_line(tiny_llama_dir, tmp_path, capsys):
    rc = main(["sample", "--model", tiny_llama_dir, "--prompt", "", "-n", "2", "--length", "3",
               "--out", str(tmp_path / "x.parquet")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "prompt must be a non-empty string" in err
    assert not (tmp_path / "x.parquet").exists()
    rc = main(["sample", "--model", tiny_llama_dir, "--prompt", "Hi", "-n", "0", "--length", "3",
               "--out", str(tmp_path / "x.parquet")])
    assert rc == 2 and "n must be a positive integer" in capsys.readouterr().err


def test_rea_sample_bad_arguments_fail_before_any_work(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    """Bad --out, -n, --length, --seed, --batch-size or --temperature: one line naming the option, no model loaded."""
    import rea.lm.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(rea.lm.models, "load_model", no_load)
    (tmp_path / "dir.parquet").mkdir()
    good = dict(n="2", length="3", seed="0", out=str(tmp_path / "x.parquet"))
    cases = [
        (dict(out=str(tmp_path)), "--out must name a .parquet file"),
        (dict(out=str(tmp_path / "dir.parquet")), "not a directory"),
        (dict(out=str(tmp_path / "x.csv")), "--out must name a .parquet file"),
        (dict(out=str(tmp_path / "missing" / "x.parquet")), "--out: the directory"),
        (dict(n="0"), "-n must be a positive integer"),
        (dict(length="-1"), "--length must be a positive integer"),
        (dict(seed="-3"), "--seed must be a non-negative integer"),
        (dict(batch="0"), "--batch-size must be a positive integer"),
        (dict(temperature="0"), "temperature must be a finite number > 0"),
        (dict(temperature="nan"), "temperature must be a finite number > 0"),
    ]
    for change, match in cases:
        a = {**good, **change}
        argv = ["sample", "--model", tiny_llama_dir, "--prompt", "Hi", "-n", a["n"], "--length", a["length"],
                "--seed", a["seed"], "--out", a["out"]]
        argv += ["--batch-size", a["batch"]] if "batch" in a else []
        argv += ["--temperature", a["temperature"]] if "temperature" in a else []
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.count("\n") == 0 and match in err, (change, err)
        assert err.startswith("rea sample: error:")
    assert not (tmp_path / "missing").exists() and not (tmp_path / "x.parquet").exists()


def _fake_hf_cache(root, repo_id, *files):
    """A Hugging Face hub cache under ``root`` holding ``files`` of ``repo_id`` at revision main (as hf_hub_download
    lays it out: ``models--org--name/refs/main`` naming ``snapshots/<sha>/``)."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "snapshots" / sha).mkdir(parents=True)
    for name in files:
        (repo / "snapshots" / sha / name).write_text("{}")
    return root


def _must_not_run(*args, **kwargs):
    raise AssertionError("a kernel, a model load or Ray started before the model was checked")


def test_rea_run_uncached_hub_model_fails_before_any_kernel(tmp_path, capsys, monkeypatch):
    """`rea run sampling -p model <uncached hub id>` offline: exit 2, one line naming `model` and the id, no kernel
    started and no run folder written."""
    import huggingface_hub.constants
    import papermill

    from rea.book import runner

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(papermill, "execute_notebook", _must_not_run)
    monkeypatch.setattr(runner, "ROOT", tmp_path)  # the default run folder goes to tmp_path/runs/
    rc = main(["run", "sampling", "-p", "model", "nosuch-org/nosuch", "-p", "profile", "ci"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("rea run: error: parameter 'model': 'nosuch-org/nosuch' is not")
    assert "HF_HUB_OFFLINE" in err and "allowed: 'smollm2-135m'" in err and "'toy'" in err
    assert not (tmp_path / "runs").exists()


def test_rea_run_model_check_passes_toy_default_directory_and_cached_hub_id(tiny_llama_dir, tmp_path, monkeypatch):
    """`toy`, the embedded default, a local directory and a hub id in the (fake) HF cache pass `rea run`'s check and
    reach the kernel; an empty directory and a TinyStories id whose GPT-Neo tokenizer is not cached do not."""
    import huggingface_hub.constants
    import papermill

    from rea.book import runner
    from rea.lm import TINYSTORIES_TOKENIZER, check_model_name

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = _fake_hf_cache(tmp_path / "hub", "some-org/cached-lm", "config.json", "tokenizer.json")
    _fake_hf_cache(hub, "some-org/TinyStories-cached", "config.json")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    assert check_model_name("toy") == "toy" and check_model_name("smollm2-135m") == "embedded"
    assert check_model_name(tiny_llama_dir) == "directory" and check_model_name("some-org/cached-lm") == "cache"

    started = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, target, parameters, **kw: started.append(parameters))
    for i, model in enumerate(["toy", "smollm2-135m", tiny_llama_dir, "some-org/cached-lm"]):
        rc = runner.main(["sampling", "-p", "model", model, "--out", str(tmp_path / f"run{i}"), "--no-progress"])
        assert rc == 0 and started[-1]["model"] == model, model

    (tmp_path / "empty").mkdir()
    model = runner.Parameter("model", "str", "smollm2-135m", "")
    for bad, match in [(str(tmp_path / "empty"), "holds no config.json"),
                       (str(tmp_path / "nope"), "is not a directory"),
                       ("some-org/TinyStories-cached", f"its tokenizer {TINYSTORIES_TOKENIZER!r} is not")]:
        with pytest.raises(runner.RunError, match=match):
            runner.check_value(model, bad)
    _fake_hf_cache(hub, TINYSTORIES_TOKENIZER, "tokenizer_config.json", "vocab.json")
    assert runner.check_value(model, "some-org/TinyStories-cached") == "some-org/TinyStories-cached"


def test_rea_sample_and_sweep_check_the_model_before_loading_or_ray(tmp_path, capsys, monkeypatch):
    """`rea sample --model` and `rea sweep --model` with an uncached hub id offline: exit 2, one line naming --model,
    no model loaded, Ray not started, nothing written."""
    import huggingface_hub.constants

    import rea.lm
    import rea.sweep.pool

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(rea.lm, "load_model", _must_not_run)
    monkeypatch.setattr(rea.sweep.pool, "connect", _must_not_run)
    rc = main(["sample", "--model", "nosuch-org/nosuch", "--prompt", "Hi", "-n", "2", "--length", "3",
               "--out", str(tmp_path / "x.parquet")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("rea sample: error: --model: 'nosuch-org/nosuch'"), err
    (tmp_path / "prompts.txt").write_text("The sky is\n")
    rc = main(["sweep", "--prompts", str(tmp_path / "prompts.txt"), "--threshold", "3", "--model", "nosuch-org/nosuch",
               "--out", str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("rea sweep: error: --model: 'nosuch-org/nosuch'"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]
