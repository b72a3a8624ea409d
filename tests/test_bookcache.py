from rea.book import cache as bookcache


def test_cache_wiped_when_package_changes(tmp_path):
    (tmp_path / "rea").mkdir()
    (tmp_path / "rea" / "a.py").write_text("x = 1\n")
    cache, stamp = tmp_path / "_build" / ".jupyter_cache", tmp_path / "_build" / "stamp"
    cache.mkdir(parents=True)
    assert bookcache.sync(tmp_path, cache, stamp)  # no stamp yet: wipe
    cache.mkdir()
    assert not bookcache.sync(tmp_path, cache, stamp) and cache.exists()  # unchanged: keep
    (tmp_path / "rea" / "a.py").write_text("x = 2\n")
    assert bookcache.sync(tmp_path, cache, stamp) and not cache.exists()


HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# Page
"""


def _chapter(path, code):
    path.write_text(HEADER + f"\n```{{code-cell}} ipython3\n{code}\n```\n")
    return path


def test_execute_caches_chapters_for_jupyter_book_and_reports_failures(tmp_path):
    import pytest

    from rea.book import execute

    good = [_chapter(tmp_path / f"{n}.md", f"print({n!r}, 6 * 7)") for n in ("a", "b")]
    bad = _chapter(tmp_path / "c.md", "raise RuntimeError('broken chapter')")
    cache = tmp_path / "_build" / ".jupyter_cache"
    assert execute.pending(cache, [*good, bad]) == [*good, bad]
    failed = execute.execute([*good, bad], cache, jobs=2, progress=False)
    assert len(failed) == 1 and failed[0].startswith("c.md: failed") and "broken chapter" in failed[0]
    assert execute.pending(cache, [*good, bad]) == [bad]  # what myst-nb's cache mode will find
    from jupyter_cache import get_cache

    _, nb = get_cache(str(cache)).merge_match_into_notebook(execute.read_notebook(good[1]))
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "b 42" in code[0].outputs[0]["text"]
    _chapter(good[0], "print('changed')")  # a code change: pending again
    assert execute.pending(cache, good) == [good[0]]
    with pytest.raises(ValueError, match="jobs must be an integer ≥ 1"):
        execute.execute(good, cache, jobs=0)


def test_notebook_pages_are_the_toc_pages_jupyter_book_executes():
    from rea.book import CHAPTERS, execute

    names = [p.name for p in execute.notebook_pages()]
    assert [n for n in names if n in CHAPTERS.values()] == list(CHAPTERS.values())


def test_the_summary_page_runs_after_the_chapters_and_again_when_one_changed(tmp_path):
    """The introduction reads the executed chapters: it runs last, and again whenever a chapter was executed, though
    its own code (jupyter-cache's key) did not change; not when nothing did."""
    from jupyter_cache import get_cache

    from rea.book import execute

    cache = tmp_path / "_build" / ".jupyter_cache"
    pages = [_chapter(tmp_path / "a.md", "print(1)"),
             _chapter(tmp_path / "intro.md", "import time; print(time.time_ns())")]

    def summary_output():
        _, nb = get_cache(str(cache)).merge_match_into_notebook(execute.read_notebook(pages[1]))
        return [c for c in nb.cells if c.cell_type == "code"][0].outputs[0]["text"]

    assert execute.execute_book(pages, cache, jobs=1, progress=False) == []
    first = summary_output()
    assert execute.execute_book(pages, cache, jobs=1, progress=False) == [] and summary_output() == first
    _chapter(pages[0], "print(2)")
    assert execute.execute_book(pages, cache, jobs=1, progress=False) == [] and summary_output() != first
