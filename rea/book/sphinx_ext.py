"""A Sphinx extension for the book's HTML (``sphinx: extra_extensions: [rea.book.sphinx_ext]`` in ``_config.yml``).

* **MathJax served with the book.** MathJax 3 (the files of the PyPI wheel ``sphinx-mathjax-offline``, pinned in
  ``requirements.lock``) is copied into ``_static/mathjax`` through ``html_static_path`` and ``mathjax_path`` points
  there, so formulas typeset from ``file://`` with no network. A ``mathjax_path`` set elsewhere is left alone.
* **Each script once.** A page's ``<script>`` list is de-duplicated (sphinx-thebe's inline ``const THEBE_JS_URL``
  configuration is added twice under Jupyter Book 1 and Sphinx 7, a ``SyntaxError`` on every page).
* **A valid colour mode.** The pydata theme's ``html_context["default_mode"]`` is ``"light"`` unless configured: an
  empty mode makes the theme log ``Got invalid theme mode`` as a console error on a reader's first visit, and the
  figures are drawn for a light background.
* **Tables numbered as tables.** A ``{glue:figure}`` that pastes a table (a DataFrame or Styler: HTML with a
  ``<table>`` and no image) becomes a :class:`glued_table`, an enumerable node of Sphinx's ``table`` kind: it is
  numbered "Table N" (``numfig_format``) in the tables' sequence, ``{numref}`` cites it so, and the stylesheet
  :data:`CSS` (``_static/rea-book.css``) shows its caption above it. A figure with ``:figclass: rea-table`` is
  treated as a table too.
* **Alt text.** A figure's image without ``:alt:`` gets its caption as alt text.

``python -m rea.book.browser_check`` checks the result in Chromium (``make book-check``).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from docutils import nodes

MATHJAX_DIST = "sphinx-mathjax-offline"
MATHJAX_ENTRY = "mathjax/tex-mml-chtml.js"
"""The MathJax component the pages load, relative to ``_static`` (the one Sphinx loads from a CDN by default)."""
GLUED_TABLE_CLASS = "rea-table"
"""``:figclass:`` that marks a ``{glue:figure}`` as a table even when its content is not recognised as one."""


CSS = """/* rea.book.sphinx_ext: a glued table's caption above the table (docutils writes it last) */
figure.rea-glued-table { display: flex; flex-direction: column; }
figure.rea-glued-table > figcaption { order: -1; margin-bottom: 0.5em; }
figure.rea-glued-table > div.output { overflow-x: auto; }
"""
"""The book's extra stylesheet, written to ``_static/rea-book.css``."""


def mathjax_static_dir() -> Path:
    """The directory holding ``mathjax/`` (MathJax 3) inside the installed ``sphinx-mathjax-offline`` wheel."""
    try:
        dist = metadata.distribution(MATHJAX_DIST)
    except metadata.PackageNotFoundError as exc:
        raise ValueError(f"MathJax for the book needs the package {MATHJAX_DIST!r}: run `make setup`") from exc
    static = Path(str(dist.locate_file(f"{MATHJAX_DIST}/static")))
    if not (static / MATHJAX_ENTRY).is_file():
        raise ValueError(f"{MATHJAX_DIST} holds no {MATHJAX_ENTRY} under {static}")
    return static


def _configure(app, config) -> None:
    if config.mathjax_path == config.values["mathjax_path"].default:
        config.mathjax_path = MATHJAX_ENTRY
        config.html_static_path = [*config.html_static_path, str(mathjax_static_dir())]
    config.html_context = {"default_mode": "light", **(config.html_context or {})}


def _write_css(app) -> None:
    if app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        (static / "rea-book.css").write_text(CSS)


def _unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        name = getattr(script, "filename", script) or ""  # None (added by the builder) and "" (by the registry)
        key = (str(name), tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


class glued_table(nodes.figure):  # noqa: N801 (docutils names node classes in lower case)
    """A pasted table: rendered like a figure (its caption shown above it by :data:`CSS`), numbered and cited as a
    table."""


def is_glued_table(figure) -> bool:
    """Whether a figure node holds a pasted table: class :data:`GLUED_TABLE_CLASS`, or raw HTML with a
    ``<table`` and no image."""
    if GLUED_TABLE_CLASS in figure.get("classes", []):
        return True
    raw = [n for n in figure.findall(nodes.raw) if "html" in n.get("format", "").split()]
    return any("<table" in n.astext() for n in raw) and not any(True for _ in figure.findall(nodes.image))


def number_glued_tables(app, doctree) -> None:
    """Replace every figure of ``doctree`` that :func:`is_glued_table` by a :class:`glued_table`."""
    for figure in list(doctree.findall(nodes.figure)):
        if type(figure) is not nodes.figure or not is_glued_table(figure):
            continue
        table = glued_table(figure.rawsource, *figure.children, **figure.attributes)
        table["classes"] = [*table["classes"], "rea-glued-table"]
        table.source, table.line = figure.source, figure.line
        figure.replace_self(table)
        for node_id in table["ids"]:
            doctree.ids[node_id] = table


def alt_from_captions(app, doctree) -> None:
    """Give each figure's image without ``:alt:`` its caption as alt text (not the file name docutils would use)."""
    for figure in doctree.findall(nodes.figure):
        caption = next(iter(figure.findall(nodes.caption)), None)
        for image in figure.findall(nodes.image):
            if caption is not None and not image.get("alt"):
                image["alt"] = " ".join(caption.astext().split())


def _visit(self, node):
    self.visit_figure(node)


def _depart(self, node):
    self.depart_figure(node)


def setup(app):
    app.connect("config-inited", _configure)
    app.connect("builder-inited", _write_css)
    app.add_css_file("rea-book.css")
    app.connect("html-page-context", _unique_scripts)
    app.connect("doctree-read", number_glued_tables)
    app.connect("doctree-read", alt_from_captions)
    app.add_enumerable_node(glued_table, "table", override=True, html=(_visit, _depart), latex=(_visit, _depart),
                            text=(_visit, _depart))  # override: a second build in one process re-registers it
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
