"""The `rea` command line, offline: info, sample to Parquet with provenance, errors as one line."""

import numpy as np

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
