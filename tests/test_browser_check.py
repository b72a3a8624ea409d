"""``make book-check``: what rea.book.browser_check decides is broken on a page, on small synthetic pages.

The decisions (:func:`analyse_page`) are tested without a browser; one test drives a real headless Chromium over a
tiny site and is skipped where Chromium is not installed.
"""

import pytest

from rea.book import browser_check as bc


def page(body: str, head: str = "") -> str:
    return f"<html><head>{head}</head><body><div id='main'>{body}</div></body></html>"


def problems(body: str, root, name: str = "book/p.html", **kwargs) -> list[str]:
    return bc.analyse_page(name, page(body), root, **kwargs)


@pytest.fixture
def site(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "book" / "other.html").write_text(page("<h2 id='sec'>S</h2><a name='old'></a>"))
    (tmp_path / "index.html").write_text(page("home"))
    return tmp_path


def test_a_clean_page_has_no_problems(site):
    body = ("<p>Typeset <span class='math notranslate nohighlight'><mjx-container jax='CHTML'><mjx-math>"
            "<mjx-mi></mjx-mi></mjx-math></mjx-container></span> and text costing $5 and $6.</p>"
            "<pre>raw \\(x\\) and $y$ and {glue:text}`k` in code</pre><code>$z$</code>"
            "<img src='../_images/a.png'><img src='data:image/png;base64,AAAA'>"
            "<a href='other.html#sec'>s</a><a href='other.html#old'>o</a><a href='#main'>m</a><a href='#'>top</a>"
            "<a href='../index.html?v=1'>i</a><a href='https://example.org/x#y'>e</a><a href='mailto:a@b'>m</a>")
    assert problems(body, site) == []


@pytest.mark.parametrize("body", [
    "<span class='math notranslate nohighlight'>\\(\\lambda\\)</span>",  # MathJax never ran
    "<div class='math notranslate nohighlight'>\\[ x^2 \\]</div>",
    "<p>the tail $P(\\varphi \\ge a)$ is small</p>",  # dollar math the parser left as text
    "<p>inline \\(x\\) in prose</p>",
    "<p>$$ a = b $$</p>",
])
def test_raw_tex_is_unrendered_math(site, body):
    found = problems(body, site)
    assert len(found) == 1 and found[0].startswith("book/p.html: unrendered math:"), found


def test_mathjax_errors_and_undefined_macros(site):
    found = problems("<span class='math'><mjx-container><mjx-merror data-mjx-error='Missing close brace'>"
                     "<mjx-mtext>x</mjx-mtext></mjx-merror></mjx-container></span>"
                     "<span class='math'><mjx-container><mjx-mtext>\\foo</mjx-mtext></mjx-container></span>"
                     "<span class='MathJax_Error'>old error</span>", site)
    assert any("MathJax error: Missing close brace" in p for p in found)
    assert any("undefined TeX macro in math: \\foo" in p for p in found)
    assert any("MathJax error: old error" in p for p in found)


@pytest.mark.parametrize("body, what", [
    ("<p>quoted {glue:text}`th_min:.1e` here</p>", "unparsed role"),
    ("<p>see {numref}`fig-x`</p>", "unparsed role"),
    ("<a href='#id1'><span class='problematic' id='id2'>{glue:}`missing`</span></a><span id='id1'></span>",
     "glue placeholder or unresolved role"),
    ("<div class='system-message'><p>System Message: WARNING/2</p></div>", "glue placeholder or unresolved role"),
    ("<p>glue key not found: x</p>", "glue placeholder"),
])
def test_glue_placeholders(site, body, what):
    found = problems(body, site)
    assert found and all(what in p for p in found), found


def test_javascript_errors_are_reported_once_each(site):
    errors = ["uncaught SyntaxError: Identifier 'X' has already been declared", "console.error: boom",
              "console.error: boom"]
    assert problems("<p>ok</p>", site, errors=errors) == [
        "book/p.html: JavaScript error: uncaught SyntaxError: Identifier 'X' has already been declared",
        "book/p.html: JavaScript error: console.error: boom"]


def test_broken_images(site):
    found = problems("<img src='../_images/missing.png'><img src='../_images/a.png'><img>", site,
                     broken_images=["../_images/a.png"])
    assert found == ["book/p.html: broken image: ../_images/missing.png", "book/p.html: broken image: ../_images/a.png",
                     "book/p.html: broken image: (no src)"]


def test_broken_links(site):
    found = problems("<a href='nope.html'>1</a><a href='other.html#gone'>2</a><a href='#nowhere'>3</a>"
                     "<a href='../_static/x.css'>4</a>", site)
    assert found == ["book/p.html: broken link: nope.html (no file book/nope.html)",
                     "book/p.html: broken link: other.html#gone (no #gone in book/other.html)",
                     "book/p.html: broken link: #nowhere (no #nowhere in book/p.html)",
                     "book/p.html: broken link: ../_static/x.css (no file _static/x.css)"]


def test_anchors_of_other_pages_can_be_given(site):
    assert problems("<a href='other.html#x'>x</a>", site, anchors=lambda path: {"x"}) == []


@pytest.mark.parametrize("page_name, href, target", [
    ("book/a.html", "#x", ("book/a.html", "x")),
    ("book/a.html", "../index.html?v=1#y", ("index.html", "y")),
    ("book/a.html", "b.html", ("book/b.html", "")),
    ("index.html", "book/", ("book/index.html", "")),
    ("book/a.html", "c%20d.html#e%20f", ("book/c d.html", "e f")),
    ("book/a.html", "https://mybinder.org/v2#x", (None, "")),
    ("book/a.html", "//cdn.example/x.js", (None, "")),
    ("book/a.html", "mailto:x@y", (None, "")),
])
def test_resolve_link(page_name, href, target):
    assert bc.resolve_link(page_name, href) == target


def test_built_pages_skip_assets(site):
    (site / "_static").mkdir()
    (site / "_static" / "x.html").write_text("")
    (site / "_sources").mkdir()
    (site / "_sources" / "y.html").write_text("")
    assert bc.built_pages(site) == ["book/other.html", "index.html"]


def test_without_chromium_one_line_says_how_to_get_it(site, monkeypatch, capsys):
    monkeypatch.setattr(bc, "find_chromium", lambda: None)
    assert bc.main([str(site)]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [bc.INSTALL_HINT] and "apt-get install chromium" in out[0]


def test_without_a_build_it_says_so(tmp_path, capsys):
    assert bc.main([str(tmp_path / "nothing")]) == 2
    assert "make book" in capsys.readouterr().out


@pytest.mark.skipif(bc.find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_real_browser_finds_what_is_broken_and_passes_what_is_not(tmp_path):
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d4944415478da63f8cfc0f01f0005000201a2d6e6b10000000049454e44ae426082")
    (tmp_path / "ok.png").write_bytes(png)
    (tmp_path / "fake.png").write_bytes(b"not a png")
    (tmp_path / "good.html").write_text(page("<p id='a'>fine</p><img src='ok.png'><a href='#a'>a</a>"))
    (tmp_path / "bad.html").write_text(page(
        "<script>window.notDefinedAnywhere();</script>"
        "<span class='math notranslate nohighlight'>\\(x\\)</span>"
        "<img src='fake.png'><a href='good.html#zz'>z</a>",
        head="<script src='https://cdn.example.invalid/mathjax.js'></script>"))
    (tmp_path / "index.html").write_text('<html><head><meta http-equiv="Refresh" content="0; url=good.html">'
                                         "</head><body></body></html>")
    found = bc.check_site(tmp_path, bc.find_chromium())
    assert not [p for p in found if p.startswith("index.html")], found
    assert not [p for p in found if p.startswith("good.html")], found
    bad = "\n".join(found)
    assert "bad.html: JavaScript error: uncaught" in bad and "notDefinedAnywhere" in bad
    assert "bad.html: JavaScript error:" in bad and "cdn.example.invalid" in bad  # offline: the CDN fails
    assert "bad.html: unrendered math: \\(x\\)" in bad
    assert "bad.html: broken image: fake.png" in bad
    assert "bad.html: broken link: good.html#zz (no #zz in good.html)" in bad
