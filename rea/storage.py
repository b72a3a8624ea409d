"""Results on disk: Parquet files that carry their own provenance.

Every file the package writes is one Parquet file (pyarrow) whose schema metadata holds, under the key ``b"rea"``,
a JSON record of how it was made (:func:`provenance`): model, prompt, parameters, seed, package versions, the git
commit of the ``rea`` source tree and a UTC timestamp -- but no host or user name.

* :func:`save_samples` / :func:`load_samples` -- a :class:`rea.sampling.Samples` batch (tokens, per-token log p_M and
  log q, lengths, texts, prompt, meta), plus optional observable columns; arrays round-trip exactly.
* :func:`save_table` / :func:`load_table` -- any tidy :class:`pandas.DataFrame` (e.g. TPS per-step records).
* :func:`read_provenance` -- the provenance record of either kind of file, without reading the data.
* :func:`check_output_path` -- a one-line error, before any work, for an output path that cannot be written.
* :func:`file_lock` -- an exclusive lock between processes (and machines sharing the file system) on one path.

Writes are atomic: the file is written under a temporary name in the same directory and moved into place with
:func:`os.replace`, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import math
import os
import pickle
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

META_KEY = b"rea"
"""Schema-metadata key under which the JSON provenance (and Samples fields) are stored."""

FORMAT_SAMPLES = "rea.samples/1"
FORMAT_TABLE = "rea.table/1"
_SAMPLE_COLUMNS = ("tokens", "logp", "logq", "length", "text")
_VERSIONED = ("rea", "torch", "transformers", "numpy", "pandas", "pyarrow", "pymbar")


# --------------------------------------------------------------------------------------------- provenance


def to_jsonable(value):
    """``value`` with numpy scalars/arrays, tuples, sets, paths, dataclasses and callables made JSON-friendly."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no inf/nan; keep them readable
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if callable(value):
        return f"callable:{getattr(value, '__qualname__', getattr(value, '__name__', type(value).__name__))}"
    return repr(value)


def package_versions() -> dict[str, str | None]:
    """Installed versions of rea, torch, transformers, numpy, pandas, pyarrow and pymbar (None when absent)."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(directory: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``directory`` (default: the ``rea`` package).

    ``commit`` is ``git rev-parse HEAD``; ``dirty`` is whether ``git status --porcelain`` lists changes in that
    directory. Both are None when git or the repository is unavailable (e.g. an installed wheel).
    """
    directory = Path(directory or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=directory, capture_output=True, text=True, timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (commit or None), bool(status.strip())


def provenance(**params) -> dict:
    """A JSON-serialisable record of how a result was made.

    Keys: ``model``, ``prompt``, ``seed`` (taken from ``params`` when given, else None), ``params`` (all keyword
    arguments, made JSON-friendly), ``versions`` (:func:`package_versions`), ``git_commit`` and ``git_dirty``
    (:func:`git_commit` of the ``rea`` sources), ``python``, ``created`` (UTC ISO-8601). No host or user name.
    """
    params = to_jsonable(params)
    commit, dirty = git_commit()
    return {
        "model": params.get("model"),
        "prompt": params.get("prompt"),
        "seed": params.get("seed"),
        "params": params,
        "versions": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------- writing


def check_output_path(path, name: str = "path") -> Path:
    """``path`` as a :class:`Path` if a Parquet result can be written there, checked before any work is done.

    It must end in ``.parquet``, must not be a directory, and its directory must exist and be writable (an existing
    file is replaced). Otherwise a one-line ValueError naming ``name`` (e.g. ``"--out"``) says what is allowed.
    """
    path = Path(path)
    if path.suffix != ".parquet":
        raise ValueError(f"{name} must name a .parquet file, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{name} must name a .parquet file, not a directory: {str(path)!r}")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{name}: the directory {str(parent)!r} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: the directory {str(parent)!r} is not writable; choose another path")
    return path


def file_lock(path: str | os.PathLike):
    """An exclusive inter-process lock on ``<path>.lock`` for a ``with`` block (:class:`filelock.FileLock`).

    The one lock of the package: chapters that share a cached run (:mod:`rea.book.runs`) and sweep workers that load
    the model into the shared cache (:mod:`rea.sweep.worker`) wait on it instead of doing the work twice."""
    from filelock import FileLock

    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False):
    """Write a file (or, with ``directory=True``, a directory) in place atomically.

    Yields a temporary path next to ``path``; when the block finishes it replaces ``path`` in one ``os.replace``,
    and when it raises the temporary file is removed and ``path`` is left as it was. Readers therefore see the old
    or the new content, never half of it -- the rule for every file this package writes (tables, checkpoints,
    converted models).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_pickle(obj, path: str | os.PathLike) -> None:
    """Pickle ``obj`` to ``path`` atomically (:func:`atomic_path`), flushed to disk before the replace."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        fh.flush()
        os.fsync(fh.fileno())


def _atomic_write_table(table, path: str | os.PathLike) -> Path:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def _with_meta(table, record: dict):
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(to_jsonable(record)).encode()
    return table.replace_schema_metadata(meta)


def _read_meta(path) -> dict:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    meta = pq.read_schema(path).metadata or {}
    if META_KEY not in meta:
        raise ValueError(f"{path} is a Parquet file without rea metadata (key b'rea'); it was not written by rea")
    return json.loads(meta[META_KEY])


def save_samples(samples, path, provenance: dict | None = None, observables: dict | None = None) -> Path:
    """Write a :class:`~rea.sampling.Samples` batch of N completions to one Parquet file, atomically.

    Columns: ``tokens`` (list<int64>, length L each), ``logp``, ``logq`` (list<float64>), ``length`` (int64),
    ``text`` (string), plus one float64 column per entry of ``observables`` (name -> array ``[N]``). The schema
    metadata key ``b"rea"`` holds JSON with ``provenance``, ``prompt``, ``prompt_ids``, ``meta`` and L. ``meta``
    must be JSON-friendly: numpy arrays in it come back as lists.
    """
    import pyarrow as pa

    tokens = np.asarray(samples.tokens, dtype=np.int64)
    logp = np.asarray(samples.logp, dtype=np.float64)
    logq = np.asarray(samples.logq, dtype=np.float64)
    if tokens.ndim != 2 or logp.shape != tokens.shape or logq.shape != tokens.shape:
        raise ValueError(
            f"samples must hold tokens, logp and logq of one shape [N, L]; got {tokens.shape}, {logp.shape}, "
            f"{logq.shape}"
        )
    n, length = tokens.shape
    if len(samples.texts) != n or np.shape(samples.lengths) != (n,):
        raise ValueError(f"samples must hold N = {n} texts and lengths; got {len(samples.texts)} and "
                         f"{np.shape(samples.lengths)}")

    def lists(a, typ):
        offsets = pa.array(np.arange(0, n * length + 1, length, dtype=np.int32) if n else np.zeros(1, np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(a.reshape(-1), type=typ))

    columns = {
        "tokens": lists(tokens, pa.int64()),
        "logp": lists(logp, pa.float64()),
        "logq": lists(logq, pa.float64()),
        "length": pa.array(np.asarray(samples.lengths, dtype=np.int64)),
        "text": pa.array(list(samples.texts), type=pa.string()),
    }
    for name, values in (observables or {}).items():
        if name in _SAMPLE_COLUMNS:
            raise ValueError(f"observables: the name {name!r} clashes with a sample column {_SAMPLE_COLUMNS}")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (n,):
            raise ValueError(f"observables[{name!r}] must have shape ({n},), got {values.shape}")
        columns[str(name)] = pa.array(values)
    table = pa.table(columns)
    record = {
        "format": FORMAT_SAMPLES,
        "provenance": provenance,
        "prompt": samples.prompt,
        "prompt_ids": [int(i) for i in samples.prompt_ids],
        "length": int(length),
        "meta": samples.meta,
        "observables": list((observables or {}).keys()),
    }
    return _atomic_write_table(_with_meta(table, record), path)


def load_samples(path):
    """Read a file written by :func:`save_samples` back into :class:`~rea.sampling.Samples` (arrays exact)."""
    import pyarrow.parquet as pq

    from rea.sampling import Samples

    record = _read_meta(path)
    if record.get("format") != FORMAT_SAMPLES:
        raise ValueError(f"{path} holds a {record.get('format')!r}, not samples; use load_table for tables")
    table = pq.read_table(path, columns=list(_SAMPLE_COLUMNS))
    n, length = table.num_rows, int(record["length"])

    def matrix(name, dtype):
        flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=dtype).reshape(n, length)

    return Samples(
        prompt=record["prompt"],
        prompt_ids=list(record["prompt_ids"]),
        tokens=matrix("tokens", np.int64),
        logp=matrix("logp", np.float64),
        logq=matrix("logq", np.float64),
        lengths=np.asarray(table.column("length").to_numpy(), dtype=np.int64),
        texts=table.column("text").to_pylist(),
        meta=record.get("meta") or {},
    )


def read_observables(path) -> dict[str, np.ndarray]:
    """The observable columns stored by :func:`save_samples` (name -> float64 ``[N]``)."""
    import pyarrow.parquet as pq

    names = _read_meta(path).get("observables") or []
    if not names:
        return {}
    table = pq.read_table(path, columns=names)
    return {name: np.asarray(table.column(name).to_numpy(), dtype=np.float64) for name in names}


def save_table(df, path, provenance: dict | None = None) -> Path:
    """Write a tidy :class:`pandas.DataFrame` (index dropped) to Parquet atomically, provenance in the metadata."""
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    return _atomic_write_table(_with_meta(table, {"format": FORMAT_TABLE, "provenance": provenance}), path)


def load_table(path):
    """``(df, provenance)`` of a file written by :func:`save_table`."""
    import pyarrow.parquet as pq

    record = _read_meta(path)
    return pq.read_table(path).to_pandas(), record.get("provenance")


def read_provenance(path) -> dict | None:
    """The provenance record stored in a file written by :func:`save_samples` or :func:`save_table`."""
    return _read_meta(path).get("provenance")
