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
