"""The package's shape: one home per idea, short modules and functions, no private imports across modules, no
import cycles, one source of tiny test models, and a chapter-facing API that chapters import in one or two lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rea"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text())


def _imports(name: str):
    """(imported module, imported names) for every import statement of module ``name`` (lazy ones included)."""
    is_package = MODULES[name].name == "__init__.py"
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short(name):
    n = len(MODULES[name].read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{name} has {n} lines (at most {MAX_MODULE_LINES}): split it by idea"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_are_short(name):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(_tree(name)) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_name_imported_across_modules(name):
    bad = [f"{target}.{n}" for target, names in _imports(name) if target.startswith("rea")
           for n in names if n.startswith("_") and not n.startswith("__") and target != name]
    bad += [target for target, _ in _imports(name) if target.startswith("rea")
            and any(p.startswith("_") and not p.startswith("__") for p in target.split("."))]
    assert not bad, f"{name} imports private names of other modules: {bad}"


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it names in an import (a parent package's ``__init__`` is not counted: Python runs
    it before any submodule, so every submodule would close a loop with an ``__init__`` that re-exports it)."""
    graph = {}
    for name in MODULES:
        deps = set()
        for target, names in _imports(name):
            if target in MODULES:
                deps.add(target)
            for n in names:  # `from rea.stats import estimators` imports a submodule
                if f"{target}.{n}" in MODULES:
                    deps.add(f"{target}.{n}")
        deps.discard(name)
        graph[name] = {d for d in deps if d != "rea" or name == "rea"}
    return graph


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_one_source_of_tiny_models():
    """Random HF test models are built only by rea.lm.tiny (tests and package alike)."""
    builders = re.compile(r"\b(LlamaConfig|GPTNeoConfig|GPT2Config)\(")
    files = list(PACKAGE.rglob("*.py")) + list((ROOT / "tests").glob("*.py")) + list((ROOT / "bench").glob("*.py"))
    where = [str(f.relative_to(ROOT)) for f in files
             if f != PACKAGE / "lm" / "tiny.py" and f != Path(__file__) and builders.search(f.read_text())]
    assert not where, f"tiny models built outside rea/lm/tiny.py: {where}"


def test_public_api_is_small_and_importable():
    import rea

    assert 15 <= len(rea.__all__) <= 40, f"rea.__all__ has {len(rea.__all__)} names"
    missing = [n for n in rea.__all__ if getattr(rea, n, None) is None]
    assert not missing, f"rea.__all__ names that do not resolve: {missing}"


@pytest.mark.parametrize("chapter", sorted(p.name for p in (ROOT / "book").glob("*.md")))
def test_chapter_setup_imports_rea_in_two_lines(chapter):
    """The first code cell (after parameters) imports the package in at most two import statements."""
    text = (ROOT / "book" / chapter).read_text()
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S)
    setup = next((c for c in cells if re.search(r"^(from rea|import rea)", c, re.M)), None)
    if setup is None:
        pytest.skip("no code cell imports rea")
    code = re.sub(r"^(:[\w-]+:.*|[%!].*)$", "", setup, flags=re.M)  # MyST cell options, magics
    statements = [n for n in ast.parse(code).body
                  if isinstance(n, (ast.Import, ast.ImportFrom))
                  and (getattr(n, "module", None) or n.names[0].name).startswith("rea")]
    assert len(statements) <= 2, f"{chapter}: {len(statements)} import statements of rea in the setup cell"
