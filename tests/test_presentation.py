"""How the book shows its numbers, figures and tables: rea.book.typeset, rea.book.records, rea.book.sphinx_ext."""

import json

import pytest

from rea.book import records, sphinx_ext
from rea.book.typeset import typeset


@pytest.mark.parametrize("x, fmt, text", [
    (2.94e-7, ".1e", "2.9 × 10⁻⁷"), (1e-9, ".0e", "1 × 10⁻⁹"), (1e9, ".0e", "1 × 10⁹"), (0.0123, ".2g", "0.012"),
    (1.5e-35, ".2g", "1.5 × 10⁻³⁵"), (34000.0, ".2g", "3.4 × 10⁴"), (3.4, ".2g", "3.4"), (2.5, "", "2.5"),
    (0.123, ".0%", "12%"), (-0.26, "+.0%", "−26%"), (0.26, "+.0%", "+26%"), (3e-8, ".2%", "3.0 × 10⁻⁶%"),
    (1e-5, ".2f", "1.0 × 10⁻⁵"), (12.3456, ".2f", "12.35"), (-1.5, ".1f", "−1.5"), (0.0, ".2f", "0.00"),
    (1024, ",d", "1,024"), (3, "", "3"), (1234567.0, ",.0f", "1,234,567"), (float("nan"), ".2f", "n/a"),
    (float("inf"), ".2g", "∞"), (True, "d", "True"), ("text", ".2g", "text"),
])
def test_typeset_follows_the_format_without_e_notation(x, fmt, text):
    assert typeset(x, fmt) == text


def test_typeset_numpy_scalars_and_bad_spec():
    np = pytest.importorskip("numpy")
    assert typeset(np.float32(2e-7), ".1e") == "2.0 × 10⁻⁷" and typeset(np.int64(5), ",d") == "5"
    with pytest.raises(ValueError, match="fmt must be a format spec"):
        typeset(1.0, ".2q")


@pytest.fixture
def glued(monkeypatch):
    import myst_nb

    out = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: out.__setitem__(name, value))
    return out


def test_record_glues_raw_and_typeset_logs_raw_and_prints_nothing(glued, tmp_path, monkeypatch, capsys):
    log = tmp_path / "records.jsonl"
    monkeypatch.setenv("REA_RECORDS", str(log))
    records.record("p", 2.94e-7, ".1e")
    records.record("share", 0.004, ".1%", unit=" of all")
    records.record("n", 5, "d", tol="exact")
    records.record("verdict", "agrees")
    records.record("named", 0.5, ".0%", text="one half")
    assert glued == {"p": 2.94e-7, "p_txt": "2.9 × 10⁻⁷", "share": 0.004, "share_txt": "0.4% of all", "n": 5,
                     "verdict": "agrees", "named": 0.5, "named_txt": "one half"}
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["name"], e["value"]) for e in lines] == [("p", 2.94e-7), ("share", 0.004), ("n", 5),
                                                        ("verdict", "agrees"), ("named", 0.5)]
    assert lines[0]["rtol"] == records.TOLERANCES["float"][0]
    assert capsys.readouterr().out == ""


def test_record_figure_raises_small_text(glued):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a line")
    ax.legend(fontsize="xx-small")
    ax.set_title("title", fontsize=4)
    records.record_figure("fig-x", fig)
    assert glued["fig-x"] is fig
    sizes = [t.get_fontsize() for t in [*ax.get_legend().get_texts(), ax.title]]
    assert min(sizes) >= records.MIN_FONT_PT


def test_mathjax_ships_with_the_book():
    static = sphinx_ext.mathjax_static_dir()
    assert (static / sphinx_ext.MATHJAX_ENTRY).is_file()
    assert (static / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_glued_tables_are_recognised():
    from docutils import nodes

    table = nodes.figure("", nodes.container("", nodes.raw("", "<div><table><tr><td>1</td></tr></table></div>",
                                                            format="html")))
    image = nodes.figure("", nodes.image(uri="a.png"))
    marked = nodes.figure("", nodes.paragraph("", "text"), classes=[sphinx_ext.GLUED_TABLE_CLASS])
    assert sphinx_ext.is_glued_table(table) and sphinx_ext.is_glued_table(marked)
    assert not sphinx_ext.is_glued_table(image)


def test_scripts_are_listed_once():
    from sphinx.builders.html._assets import _JavaScript

    body = "const THEBE_JS_URL = 'x'"
    context = {"script_files": [_JavaScript(None, body=body), _JavaScript("a.js"), _JavaScript("", body=body),
                                _JavaScript("a.js"), _JavaScript("b.js", body=body)]}
    sphinx_ext._unique_scripts(None, "p", "page.html", context, None)
    assert [(js.filename, js.attributes.get("body")) for js in context["script_files"]] == [
        (None, body), ("a.js", None), ("b.js", body)]


def test_sphinx_build_numbers_glued_tables_and_serves_mathjax(tmp_path):
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("extensions = ['rea.book.sphinx_ext']\nnumfig = True\n")
    (src / "index.rst").write_text(
        "Doc\n===\n\nSee :numref:`tab-a`, :numref:`fig-b` and :math:`x^2`.\n\n"
        ".. figure:: b.png\n   :name: fig-b\n\n   A figure.\n\n"
        ".. figure:: b.png\n   :name: tab-a\n   :figclass: rea-table\n\n   A table.\n")
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "html"
    for _ in range(2):  # a second build in the same process must not warn either
        with docutils_namespace():
            app = Sphinx(str(src), str(src), str(out), str(tmp_path / "doctrees"), "html", status=None,
                         warning=None, warningiserror=True, freshenv=True)
            app.build()
    html = (out / "index.html").read_text()
    assert "Table 1" in html and "Fig. 1" in html
    assert '<figure class="rea-table rea-glued-table' in html
    assert 'src="_static/mathjax/tex-mml-chtml.js' in html and "cdn.jsdelivr" not in html
    assert (out / "_static" / sphinx_ext.MATHJAX_ENTRY).is_file() and (out / "_static" / "rea-book.css").is_file()
    assert 'alt="A figure."' in html
