"""Check the built book in a real browser: ``python -m rea.book.browser_check [_build/html]`` (``make book-check``).

Every page of the HTML build (every ``*.html`` outside ``_static``, ``_sources`` and ``_images``) is loaded from
``file://`` in headless Chromium with the network cut off (host names do not resolve, so anything fetched from a
CDN fails as it would for a reader offline). After the load event the checker waits for MathJax to finish
typesetting, then reads the page as the reader sees it -- the DOM after scripts ran -- and reports, one line per
problem (``page: what``):

* **JavaScript errors** -- uncaught exceptions, ``console.error`` calls, resources that failed to load;
* **unrendered math** -- formulas still in their TeX source (``\\(…\\)``, ``\\[…\\]``, ``$…$``, a ``math`` element
  holding no MathJax output), MathJax error nodes (``mjx-merror``, ``MathJax_Error``) and undefined macros that
  MathJax shows as red ``\\name`` text;
* **broken images** -- an ``<img>`` the browser cannot decode, or whose file is missing;
* **broken internal links** -- an ``<a href>`` to a missing file or to an ``#anchor`` that the target page lacks;
* **glue placeholders** -- roles left unparsed (``{glue:text}`…```, ``{numref}``), docutils "problematic" nodes and
  system messages that myst-nb leaves where a glued value was missing.

The decision what is broken is :func:`analyse_page`, a pure function of the page's DOM (HTML text), the errors the
browser logged and the images it could not decode; :class:`Chromium` only collects those facts, over the Chrome
DevTools Protocol on a pipe (``--remote-debugging-pipe``: no port, no extra Python package). Chromium comes from the
distribution (``apt-get install chromium``); without it the command says so in one line and exits with status 2.
Exit status 1 when a problem was found, 0 when none.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
"""Executable names tried, in order, after the ``CHROMIUM`` environment variable."""

INSTALL_HINT = "make book-check needs Chromium: install it with `apt-get install chromium` (Debian/Ubuntu)"

SKIP_DIRS = ("_static", "_sources", "_images")
_SKIP_TAGS = {"script", "style", "code", "pre", "textarea", "noscript", "template", "kbd", "samp", "svg"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)
_RAW_MATH = [
    re.compile(r"\\\(.{1,300}?\\\)", re.DOTALL),
    re.compile(r"\\\[.{1,600}?\\\]", re.DOTALL),
    re.compile(r"\$\$.{1,600}?\$\$", re.DOTALL),
    re.compile(r"(?<![\w$\\])\$(?=[^\s$])[^$\n]{1,200}(?<=[^\s$\\])\$(?![\w$])"),
    re.compile(r"\\begin\{[a-z*]+\}"),
]
_RAW_ROLE = re.compile(r"\{(glue(:\w+)?|numref|ref|doc|eq|cite(:\w+)?|math)\}`")
_MACRO = re.compile(r"\\[A-Za-z]+")


def _snippet(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class _DomScan(HTMLParser):
    """One pass over a page's DOM: prose text, math nodes, error and placeholder nodes, links, images and ids."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[dict] = []
        self.prose: list[str] = []
        self.raw_math: list[str] = []
        self.math_errors: list[str] = []
        self.bad_macros: list[str] = []
        self.placeholders: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def _flag(self, name: str) -> bool:
        return any(frame[name] for frame in self.stack)

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        classes = set(a.get("class", "").split())
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "img":
            self.images.append(a.get("src", ""))
        if self.stack and tag.startswith("mjx-"):
            for frame in self.stack:
                frame["typeset"] = True
        if tag in _VOID:
            return
        error = tag == "mjx-merror" or bool(classes & {"MathJax_Error", "merror"}) or "data-mjx-error" in a
        self.stack.append({
            "tag": tag, "skip": tag in _SKIP_TAGS or "highlight" in classes, "mjx": tag == "mjx-container",
            "math": "math" in classes and tag in ("span", "div"), "typeset": False, "text": [],
            "error": error, "title": a.get("title", "") or a.get("data-mjx-error", ""),
            "placeholder": bool(classes & {"problematic", "system-message"}),
        })

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if not any(frame["tag"] == tag for frame in self.stack):
            return
        while self.stack:
            frame = self.stack.pop()
            self._close(frame)
            if frame["tag"] == tag:
                return

    def _close(self, frame):
        text = "".join(frame["text"])
        if frame["math"] and not frame["typeset"] and text.strip():
            self.raw_math.append(_snippet(text))
        if frame["error"]:
            self.math_errors.append(_snippet(frame["title"] or text or "MathJax error"))
        if frame["placeholder"]:
            self.placeholders.append(_snippet(text))
        if self.stack:
            self.stack[-1]["text"].append(text)

    def handle_data(self, data):
        if self.stack:
            self.stack[-1]["text"].append(data)
        if self._flag("mjx"):
            self.bad_macros.extend(_MACRO.findall(data))
        elif not any(self._flag(k) for k in ("skip", "math", "placeholder")):
            self.prose.append(data)

    def close(self):
        super().close()
        while self.stack:
            self._close(self.stack.pop())


def scan_html(html: str) -> _DomScan:
    """Parse a page's HTML once (see :class:`_DomScan`); ``ids`` of the result are the page's anchors."""
    scan = _DomScan()
    scan.feed(html)
    scan.close()
    return scan


def resolve_link(page: str, href: str) -> tuple[str | None, str]:
    """``href`` on ``page`` (both relative to the build root) as ``(target path or None if external, fragment)``.

    ``"#x"`` gives ``(page, "x")``; ``"../a.html?v=1#y"`` on ``"book/b.html"`` gives ``("a.html", "y")``; a path
    ending in ``/`` means its ``index.html``; ``http:``, ``mailto:``, ``data:`` and ``//host`` links give ``None``.
    """
    if _EXTERNAL.match(href):
        return None, ""
    parts = urlsplit(href)
    fragment = unquote(parts.fragment)
    if not parts.path:
        return page, fragment
    path = os.path.normpath(os.path.join(os.path.dirname(page), unquote(parts.path)))
    if parts.path.endswith("/"):
        path = os.path.join(path, "index.html")
    return path.replace(os.sep, "/"), fragment


def analyse_page(page: str, html: str, root, *, errors=(), broken_images=(), anchors=None) -> list[str]:
    """Problems of one rendered page, one ``"page: what"`` string each (empty when the page is clean).

    ``html`` is the page's DOM after its scripts ran (MathJax typeset), ``errors`` the JavaScript errors and failed
    loads the browser logged, ``broken_images`` the ``src`` of images it could not decode; ``root`` is the build
    directory that links and images resolve against; ``anchors(path)`` gives the ids of another page (default:
    :func:`page_anchors` of its file).
    """
    root = Path(root)
    anchors = anchors or (lambda path: page_anchors(root / path))
    scan = scan_html(html)
    out = [f"JavaScript error: {_snippet(e, 160)}" for e in dict.fromkeys(errors)]
    prose = "".join(scan.prose)
    raw = scan.raw_math + [m.group(0) for rx in _RAW_MATH for m in rx.finditer(prose)]
    out += [f"unrendered math: {_snippet(t)}" for t in dict.fromkeys(raw)]
    out += [f"MathJax error: {t}" for t in dict.fromkeys(scan.math_errors)]
    out += [f"undefined TeX macro in math: {t}" for t in dict.fromkeys(scan.bad_macros)]
    out += [f"glue placeholder or unresolved role: {t}" for t in dict.fromkeys(scan.placeholders)]
    out += [f"unparsed role: {_snippet(prose[max(m.start() - 20, 0):m.end() + 30])}"
            for m in _RAW_ROLE.finditer(prose)]
    out += [f"glue placeholder: {_snippet(prose[max(m.start() - 20, 0):m.end() + 30])}"
            for m in re.finditer(r"glue key not found|Glue reference|not found in doc|System Message", prose)]
    for src in dict.fromkeys(scan.images):
        target, _ = resolve_link(page, src) if src else (page, "")
        if not src or src in broken_images or (target is not None and not (root / target).is_file()):
            out.append(f"broken image: {src or '(no src)'}")
    out += _link_problems(page, scan, root, anchors)
    return [f"{page}: {p}" for p in out]


def _link_problems(page: str, scan: _DomScan, root: Path, anchors) -> list[str]:
    out = []
    for href in dict.fromkeys(scan.links):
        target, fragment = resolve_link(page, href)
        if target is None:
            continue
        if target != page and not (root / target).is_file():
            out.append(f"broken link: {href} (no file {target})")
        elif fragment and target.endswith(".html"):
            ids = scan.ids if target == page else anchors(target)
            if fragment not in ids:
                out.append(f"broken link: {href} (no #{fragment} in {target})")
    return out


_ANCHOR_CACHE: dict[Path, set[str]] = {}


def page_anchors(path: Path) -> set[str]:
    """The ids (and ``<a name>``) of an HTML file as built, read once and cached."""
    path = Path(path)
    if path not in _ANCHOR_CACHE:
        _ANCHOR_CACHE[path] = scan_html(path.read_text(encoding="utf-8", errors="replace")).ids
    return _ANCHOR_CACHE[path]


def find_chromium() -> str | None:
    """Path of a Chromium-family browser: ``$CHROMIUM``, else the first of :data:`BROWSERS` on ``PATH``."""
    for name in (os.environ.get("CHROMIUM"), *BROWSERS):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def built_pages(root) -> list[str]:
    """Every built page under ``root`` (paths relative to it, sorted), outside :data:`SKIP_DIRS`."""
    root = Path(root)
    pages = [p.relative_to(root).as_posix() for p in root.rglob("*.html")]
    return sorted(p for p in pages if p.split("/")[0] not in SKIP_DIRS)


_COLLECT_JS = r"""(async () => {
  const wait = (ms) => new Promise((r) => setTimeout(() => r(true), ms));
  const mj = window.MathJax;
  const typeset = (async () => {
    if (mj && mj.startup && mj.startup.promise) await mj.startup.promise;
    else if (mj && mj.Hub && mj.Hub.Queue) await new Promise((r) => mj.Hub.Queue(r));
    return false;
  })().catch(() => false);
  const mathTimeout = await Promise.race([typeset, wait(%(math_ms)d)]);
  const probe = (src) => new Promise((r) => {
    const im = new Image(); im.onload = () => r(true); im.onerror = () => r(false); im.src = src; });
  const broken = [];
  for (const img of Array.from(document.images)) {
    if (img.complete && img.naturalWidth > 0) continue;
    const ok = await Promise.race([probe(img.currentSrc || img.src), wait(%(img_ms)d).then(() => false)]);
    if (!ok) broken.push(img.getAttribute("src"));
  }
  return {html: document.documentElement.outerHTML, broken_images: broken, math_timeout: mathTimeout,
          url: location.href};
})()"""


class Chromium:
    """Headless Chromium driven over the DevTools Protocol on a pipe (fd 3: commands in, fd 4: replies out).

    ``offline=True`` makes every host name fail to resolve, so a page works only with what the build ships.
    Use as a context manager; :meth:`load` returns what :func:`analyse_page` needs.
    """

    def __init__(self, binary: str, offline: bool = True, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="rea-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        hi_r, hi_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, res_w))
        for fd in (cmd_r, res_w):
            os.close(fd)
        args = [binary, "--headless", "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,2000", "about:blank"]
        if offline:
            args.insert(1, "--host-resolver-rules=MAP * ~NOTFOUND")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        shell = f'exec "$0" "$@" 3<&{hi_r} 4>&{hi_w} {hi_r}<&- {hi_w}>&-'
        self.proc = subprocess.Popen(["bash", "-c", shell, *args], pass_fds=(hi_r, hi_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (hi_r, hi_w):
            os.close(fd)
        self._buf, self._next, self.events = b"", 0, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Ask the browser to quit, then end it (by its own process id) and remove its profile directory."""
        try:
            self.call("Browser.close", timeout=5)
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium exited (is it installed and working? try `chromium --version`)")
                self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float | None = None, **params) -> dict:
        """Send one DevTools command (to ``session`` if given) and return its result; events are kept."""
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float | None = None, count: int = 1) -> dict:
        """Wait until ``count`` events ``method`` of ``session`` have arrived (those already kept count)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            seen = [e for e in self.events if e["method"] == method and e.get("sessionId") == session]
            if len(seen) >= count:
                return seen[count - 1]
            reply = self._read_message(deadline)
            if "method" in reply:
                self.events.append(reply)

    def load(self, url: str, math_ms: int = 20000, img_ms: int = 10000) -> dict:
        """Open ``url`` in a new tab; return ``{html, broken_images, errors, math_timeout, url}`` once MathJax is
        done (``url``: where the page ended up, after any redirect)."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.events.clear()
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session)
        nav = self.call("Page.navigate", session, url=url)
        errors = [f"could not open the page: {nav['errorText']}"] if nav.get("errorText") else []
        expression = _COLLECT_JS % {"math_ms": math_ms, "img_ms": img_ms}
        for loads in range(1, 4):  # a page that redirects (index.html) is read once it has settled
            if errors:
                break
            self.wait_event("Page.loadEventFired", session, count=loads)
            try:
                facts = self.call("Runtime.evaluate", session, expression=expression, awaitPromise=True,
                                  returnByValue=True, timeout=self.timeout + (math_ms + img_ms) / 1000)
                break
            except RuntimeError as exc:
                if "navigated" not in str(exc) or loads == 3:
                    raise
        value = {} if errors else (facts.get("result", {}).get("value") or {})
        errors += [_event_error(e) for e in self.events if e.get("sessionId") == session and _event_error(e)]
        self.call("Target.closeTarget", targetId=target)
        return {"html": value.get("html", ""), "broken_images": value.get("broken_images", []),
                "errors": errors, "math_timeout": bool(value.get("math_timeout")), "url": value.get("url", url)}


def _event_error(event: dict) -> str:
    """The error text of a DevTools event, or ``""`` when the event is not an error."""
    params = event.get("params", {})
    if event["method"] == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return "uncaught " + (details.get("exception", {}).get("description") or details.get("text", "exception"))
    if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
    if event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"{entry.get('text', '')} {entry.get('url', '')}".strip()
    return ""


def check_site(root, binary: str, offline: bool = True, log=None) -> list[str]:
    """Load every built page under ``root`` in Chromium; all problems found (see :func:`analyse_page`)."""
    root = Path(root).resolve()
    problems = []
    with Chromium(binary, offline=offline) as browser:
        for page in built_pages(root):
            url = (root / page).as_uri()
            facts = browser.load(url)
            if facts["url"].split("#")[0] != url:  # a redirect (index.html): the target page is checked itself
                target = Path(unquote(urlsplit(facts["url"]).path))
                found = [] if target.is_file() else [f"{page}: redirects to a missing page {facts['url']}"]
                found += [f"{page}: JavaScript error: {_snippet(e, 160)}" for e in facts["errors"]]
            else:
                found = analyse_page(page, facts["html"], root, errors=facts["errors"],
                                     broken_images=facts["broken_images"])
            if facts["math_timeout"]:
                found.append(f"{page}: MathJax did not finish typesetting in time")
            if log:
                log(f"{page}: {len(found)} problem(s)")
            problems += found
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m rea.book.browser_check [BUILD_DIR] [--online]``: print one line per problem; exit 1 if any."""
    args = list(sys.argv[1:] if argv is None else argv)
    offline = "--online" not in args
    args = [a for a in args if a != "--online"]
    root = Path(args[0] if args else "_build/html")
    if not (root / "index.html").is_file() and not built_pages(root):
        print(f"no built book under {root}: run `make book` first")
        return 2
    binary = find_chromium()
    if binary is None:
        print(INSTALL_HINT)
        return 2
    problems = check_site(root, binary, offline=offline)
    for line in problems:
        print(line)
    n_pages = len(built_pages(root))
    print(f"book-check: {len(problems)} problem(s) in {n_pages} page(s) of {root}"
          + (" (offline)" if offline else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
