"""``rea run CHAPTER``: re-run a chapter of the book on your prompt and parameters, through papermill.

The chapter's text source (a jupytext MyST notebook under ``book/``) is converted in memory (``jupytext.read``) and
executed by ``papermill.execute_notebook`` with the parameters given on the command line. The executed notebook,
every number the chapter records (``records.jsonl``, one JSON line per :func:`rea.book.record`) and any results the
chapter writes (into its ``out_dir`` parameter, when it has one) go to ``runs/<chapter>-<slug of the prompt>/``;
nothing under ``book/`` is touched.

Every chapter has one cell tagged ``parameters`` whose lines read ``name: type = value  # help``. A value given as
``-p name value`` is parsed by the parameter's type (int, float, str, bool; list/tuple/dict by ``ast.literal_eval``):
the annotation, which is the type of the default, or ``T | None`` for a knob of the chapter's profile
(:mod:`rea.book.profiles`) whose default ``None`` means "the profile's value" (``-p name None`` asks for it back).
``--help-params`` lists them.

    rea run tps --prompt "The sky is" -p n_steps 200 -p profile quick
    rea run theory --help-params
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rea.book.chapters import BOOK, CHAPTERS, ROOT

TYPES: dict[str, type] = {t.__name__: t for t in (int, float, str, bool, list, tuple, dict)}
"""The types a parameter may have, by the name its annotation uses."""


class RunError(ValueError):
    """A one-line user error of ``rea run`` (unknown chapter or parameter, bad value)."""


@dataclass
class Parameter:
    """One line ``name: type = value  # help`` of a chapter's parameters cell."""

    name: str
    annotation: str
    default: object
    help: str

    @property
    def optional(self) -> bool:
        """Is this a knob of the profile, annotated ``T | None`` with default ``None`` ("from the profile")?"""
        return self.default is None

    @property
    def type(self) -> type:
        """The type of a value: that of the default, or ``T`` of an annotation ``T | None``."""
        if not self.optional:
            return type(self.default)
        return TYPES[self.annotation[: -len(" | None")]]


# --------------------------------------------------------------------------------------------- chapters


def chapter_path(chapter: str, book: Path = BOOK) -> Path:
    """``book/<file>`` of a chapter short name; one-line errors for unknown or not yet written chapters."""
    if chapter not in CHAPTERS:
        raise RunError(f"unknown chapter {chapter!r}; choose one of: {', '.join(CHAPTERS)}")
    path = Path(book) / CHAPTERS[chapter]
    if not path.exists():
        written = [c for c, f in CHAPTERS.items() if (Path(book) / f).exists()]
        raise RunError(
            f"chapter {chapter!r} ({path.relative_to(path.parent.parent)}) is not written yet; "
            f"written so far: {', '.join(written) or 'none'}"
        )
    return path


def read_chapter(chapter: str, book: Path = BOOK):
    """The chapter as an in-memory notebook (``jupytext.read`` of its MyST source)."""
    import jupytext

    return jupytext.read(chapter_path(chapter, book))


def parameters_cell(nb):
    """The code cell tagged ``parameters`` (exactly one)."""
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise RunError(f"a chapter needs exactly one code cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def parse_parameters(source: str) -> dict[str, Parameter]:
    """Parameters of a parameters-cell source: each ``name: type = literal  # help`` line, in order."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out: dict[str, Parameter] = {}
    for node in tree.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None):
            raise RunError(
                f"parameters cell line {node.lineno}: every statement must read 'name: type = value  # help'"
            )
        name = node.target.id
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise RunError(f"parameters cell: the default of {name!r} must be a literal") from None
        rest = lines[node.end_lineno - 1][node.end_col_offset :].strip()
        out[name] = Parameter(name, ast.unparse(node.annotation), default, rest.lstrip("#").strip())
        annotation = out[name].annotation
        if default is None and not (annotation.endswith(" | None") and annotation[: -len(" | None")] in TYPES):
            raise RunError(f"parameters cell: {name!r} defaults to None, so its annotation must read 'T | None' "
                           f"with T one of {', '.join(TYPES)}")
    return out


def chapter_parameters(chapter: str, book: Path = BOOK) -> dict[str, Parameter]:
    """The typed parameters of a chapter (name -> :class:`Parameter`)."""
    return parse_parameters(parameters_cell(read_chapter(chapter, book)).source)


_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def convert(param: Parameter, text: str):
    """Parse the command-line string ``text`` by ``param``'s type (``"None"`` for an optional one: the profile's)."""
    kind = param.type
    if param.optional and text.strip() == "None":
        return None
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError
        if kind is int:
            value = float(text) if re.fullmatch(r"\s*[-+]?\d+(\.0*)?([eE][+]?\d+)?\s*", text) else None
            if value is None or value != int(value):
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
        if kind is str:
            return text
        value = ast.literal_eval(text)
        if kind is tuple and isinstance(value, list):
            value = tuple(value)
        if kind is list and isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, kind):
            raise ValueError
        return value
    except (ValueError, SyntaxError):
        raise RunError(
            f"parameter {param.name!r} must be of type {param.annotation} (default {param.default!r}), got {text!r}"
        ) from None


_COUNT = re.compile(r"^n_|(^|_)(length|steps|chains|samples|budget)$")
"""Integer parameters that count something (n_*, *length, *steps, *chains, *samples, budget): at least 1."""


def check_value(param: Parameter, value):
    """Range checks of a :func:`convert`-ed value, so that a bad one fails before any kernel starts.

    Deliberately conservative, by name: ``profile`` must be one of :data:`rea.book.PROFILES`; ``model`` must be one
    :func:`rea.lm.load_model` can load without downloading, or while the hub answers (:func:`rea.lm.check_model_name`);
    ``seed`` must be ≥ 0 and counting integers (:data:`_COUNT`) ≥ 1; a list or tuple whose name contains ``lambda``
    must hold finite numbers (≥ 0 when its help calls it a grid of ``|λ|``). ``None`` (an optional parameter: the
    profile's value) passes. Returns ``value``; raises :class:`RunError` naming the parameter and what is allowed.
    """
    import math

    name = param.name
    if value is None:
        return value
    if name == "profile":
        from rea.book.profiles import PROFILES

        if value not in PROFILES:
            raise RunError(f"parameter 'profile' must be one of {', '.join(PROFILES)}, got {value!r}")
    elif name == "model" and param.type is str:
        from rea.lm import ModelError, check_model_name

        try:
            check_model_name(value, what="parameter 'model'")
        except ModelError as err:
            raise RunError(str(err)) from None
    elif param.type is int and (name == "seed" or _COUNT.search(name)):
        from rea.arguments import check_positive_int

        try:
            check_positive_int(f"parameter {name!r}", value, 0 if name == "seed" else 1)
        except ValueError as err:
            raise RunError(str(err)) from None
    elif param.type in (list, tuple) and "lambda" in name:
        magnitudes = "|λ|" in param.help  # a grid of |λ|, used with both signs
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and (v >= 0 or not magnitudes) for v in value):
            what = "finite numbers ≥ 0 (|λ| values)" if magnitudes else "finite numbers"
            raise RunError(f"parameter {name!r} must be a list of {what}, got {value!r}")
    return value


def slug(text: str, width: int = 40) -> str:
    """Lower-case ASCII slug of ``text`` for a run directory name."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:width].rstrip("-") or "run"


def format_parameters(chapter: str, params: dict[str, Parameter]) -> str:
    """The ``--help-params`` table."""
    rows = [(p.name, p.annotation, repr(p.default), p.help) for p in params.values()]
    w = [max(len(r[i]) for r in rows + [("name", "type", "default", "")]) for i in range(3)]
    head = f"parameters of chapter {chapter!r} ({BOOK.name}/{CHAPTERS[chapter]}); set with -p NAME VALUE:"
    lines = [head] + [f"  {n:<{w[0]}}  {t:<{w[1]}}  {d:<{w[2]}}  {h}" for n, t, d, h in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- running


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """Set the variables ``env`` in ``os.environ`` for the block, restoring (or removing) them after it: a Jupyter
    kernel started inside the block inherits them, and this process is unchanged afterwards."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_chapter(chapter: str, overrides: dict[str, str], out: Path | None = None, book: Path = BOOK,
                kernel: str = "python3", progress: bool = True, env: dict[str, str] | None = None) -> Path:
    """Execute ``chapter`` with ``overrides`` (name -> command-line string); return the executed notebook's path.

    ``env`` adds environment variables for the kernel (which inherits this process's environment while it starts);
    they are restored afterwards.
    """
    import papermill as pm

    nb = read_chapter(chapter, book)
    params = parse_parameters(parameters_cell(nb).source)
    values = {}
    for name, text in overrides.items():
        if name not in params:
            raise RunError(f"unknown parameter {name!r} for chapter {chapter!r}; allowed: {', '.join(params)}")
        values[name] = check_value(params[name], convert(params[name], text))
    prompt = values.get("prompt", params["prompt"].default if "prompt" in params else "")
    out = Path(out) if out is not None else ROOT / "runs" / f"{chapter}-{slug(str(prompt))}"
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    if "out_dir" in params and "out_dir" not in values:
        values["out_dir"] = str(out)
    nb.metadata.setdefault("kernelspec", {"name": kernel, "display_name": "Python 3", "language": "python"})
    target = out / f"{chapter}.ipynb"
    (out / "parameters.json").write_text(json.dumps(
        {"chapter": chapter, "source": f"book/{CHAPTERS[chapter]}", "parameters": values,
         "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2, default=str) + "\n")
    records = out / "records.jsonl"
    env = {"MPLBACKEND": "Agg", "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0"), "REA_RECORDS": str(records),
           **(env or {})}
    if env["REA_RECORDS"] == str(records):
        records.unlink(missing_ok=True)  # this run's numbers only
    with environment(env):  # the kernel inherits this process's environment when it starts
        pm.execute_notebook(nb, str(target), parameters=values, kernel_name=kernel, language="python",
                            cwd=str(out), progress_bar=progress, report_mode=False)
    return target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rea run", description="Re-run a chapter of the book (papermill) into runs/<chapter>-<prompt>/.",
        epilog=f"chapters: {', '.join(CHAPTERS)}",
    )
    p.add_argument("chapter", help="chapter short name")
    p.add_argument("--prompt", help="the prompt (sets the chapter's 'prompt' parameter)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a parameter (repeatable); see --help-params")
    p.add_argument("--help-params", action="store_true", help="list the chapter's parameters and exit")
    p.add_argument("--out", help="output directory (default runs/<chapter>-<slug of prompt>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.help_params:
            print(format_parameters(args.chapter, chapter_parameters(args.chapter)))
            return 0
        overrides = {}
        if args.prompt is not None:
            overrides["prompt"] = args.prompt
        for name, value in args.param:
            overrides[name] = value
        target = run_chapter(args.chapter, overrides, args.out, progress=not args.no_progress)
    except RunError as err:
        print(f"rea run: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # papermill's execution error names the failing cell
        if type(err).__name__ == "PapermillExecutionError":
            print(f"rea run: error: chapter {args.chapter!r} failed in cell {err.exec_count}: {err.ename}: "
                  f"{err.evalue} (partial notebook in {args.out or 'runs/'})", file=sys.stderr)
            return 1
        raise
    print(f"rea run: wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
