"""rea.storage: Parquet files with provenance, exact round-trips, atomic writes."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rea import storage
from rea.sampling import Samples


def make_samples(n=5, length=7, seed=0, stop=False) -> Samples:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 2**40, size=(n, length), dtype=np.int64)  # beyond int32 on purpose
    logp = -rng.exponential(size=(n, length)) * np.pi  # full float64 mantissas
    logq = logp + rng.normal(size=(n, length)) * 1e-3
    lengths = np.full(n, length, dtype=np.int64)
    if stop and n:
        lengths[0] = 3
        logp[0, 3:] = logq[0, 3:] = 0.0
    texts = [f"text {i} ünïcødé ✓ \n line" for i in range(n)]
    meta = {"model": "m", "seed": seed, "proposal": {"kind": "temperature", "temperature": 1.5}, "ids": [1, 2]}
    return Samples("Once upon a time", [5, 6, 7], tokens, logp, logq, lengths, texts, meta)


def assert_same(a: Samples, b: Samples):
    assert a.prompt == b.prompt and a.prompt_ids == b.prompt_ids
    for name in ("tokens", "logp", "logq", "lengths"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), name  # exact, not approximate
    assert a.texts == b.texts
    assert a.meta == b.meta


@pytest.mark.parametrize("n, stop", [(5, False), (4, True), (0, False)])
def test_samples_round_trip_exact(tmp_path, n, stop):
    s = make_samples(n=n, stop=stop)
    prov = storage.provenance(model="m", prompt=s.prompt, seed=3, lambdas=np.array([0.1, 0.2]))
    obs = {"ari": np.linspace(-3, 15, n), "repeats": np.arange(n, dtype=float)}
    path = storage.save_samples(s, tmp_path / "s.parquet", prov, obs)
    back = storage.load_samples(path)
    assert_same(s, back)
    got = storage.read_observables(path)
    assert set(got) == set(obs) and all(np.array_equal(got[k], obs[k]) for k in obs)
    assert storage.read_provenance(path) == json.loads(json.dumps(prov))
    # plain pyarrow sees the documented columns and metadata key
    table = pq.read_table(path)
    assert table.column_names[:5] == ["tokens", "logp", "logq", "length", "text"]
    assert table.schema.field("tokens").type == pa.list_(pa.int64())
    assert table.schema.field("logp").type == pa.list_(pa.float64())
    assert b"rea" in table.schema.metadata


def test_samples_from_sampler_round_trip(tmp_path):
    from rea.lm import DEFAULT_PROMPT, load_model
    from rea.sampling import sample

    lm = load_model("toy", device="cpu")
    s = sample(lm, DEFAULT_PROMPT, 6, 9, seed=2, progress=False)
    storage.save_samples(s, tmp_path / "x.parquet")
    assert_same(s, storage.load_samples(tmp_path / "x.parquet"))
    assert storage.read_provenance(tmp_path / "x.parquet") is None


def test_provenance_contents():
    prov = storage.provenance(model="toy", prompt="Hi", seed=7, n=np.int64(3), path=Path("/a/b"), f=len)
    assert prov["model"] == "toy" and prov["prompt"] == "Hi" and prov["seed"] == 7
    assert prov["params"]["n"] == 3 and prov["params"]["path"] == "/a/b" and prov["params"]["f"].startswith("callable:")
    assert {"rea", "torch", "transformers", "numpy", "pymbar"} <= set(prov["versions"])
    assert prov["versions"]["numpy"] == np.__version__
    assert prov["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
    assert re.match(r"\d{4}-\d\d-\d\dT", prov["created"])
    text = json.dumps(prov)  # JSON-serialisable
    host = socket.gethostname()
    if len(host) >= 4:
        assert host not in text


def test_git_commit_outside_a_repository(tmp_path):
    assert storage.git_commit(tmp_path) == (None, None)


def test_table_round_trip(tmp_path):
    df = pd.DataFrame({
        "chain": np.arange(6, dtype=np.int32), "direction": np.array([1, -1] * 3, dtype=np.int8),
        "lambda": np.linspace(-1, 1, 6), "accepted": [True, False] * 3, "text": list("abcdef"),
    })
    prov = storage.provenance(model="m", seed=1)
    storage.save_table(df, tmp_path / "t.parquet", prov)
    back, prov_back = storage.load_table(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(df, back)
    assert prov_back == json.loads(json.dumps(prov))
    assert storage.read_provenance(tmp_path / "t.parquet") == prov_back


def test_wrong_kind_and_foreign_files(tmp_path):
    storage.save_table(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="load_table"):
        storage.load_samples(tmp_path / "t.parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(ValueError, match="not written by rea"):
        storage.read_provenance(tmp_path / "foreign.parquet")
    with pytest.raises(FileNotFoundError):
        storage.load_samples(tmp_path / "missing.parquet")


def test_bad_observables(tmp_path):
    s = make_samples(n=3)
    with pytest.raises(ValueError, match="shape"):
        storage.save_samples(s, tmp_path / "a.parquet", observables={"phi": np.zeros(4)})
    with pytest.raises(ValueError, match="clashes"):
        storage.save_samples(s, tmp_path / "a.parquet", observables={"text": np.zeros(3)})
    assert not list(tmp_path.iterdir())


def test_atomic_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "s.parquet"
    old = make_samples(n=3, seed=1)
    storage.save_samples(old, path)

    def broken_write(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half written")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        storage.save_samples(make_samples(n=3, seed=2), path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["s.parquet"]  # no temporary left behind
    assert_same(old, storage.load_samples(path))  # the previous file is intact


def test_file_lock_excludes_other_processes(tmp_path):
    import multiprocessing as mp

    from rea.storage import file_lock

    target = tmp_path / "sub" / "run"
    with file_lock(target):
        assert (tmp_path / "sub" / "run.lock").exists()
        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            assert pool.apply(_try_lock, (str(target),)) is False  # held here: another process times out
    with ctx.Pool(1) as pool:
        assert pool.apply(_try_lock, (str(target),)) is True


def _try_lock(path: str) -> bool:
    from filelock import Timeout

    from rea.storage import file_lock

    try:
        with file_lock(path).acquire(timeout=0.2):
            return True
    except Timeout:
        return False
