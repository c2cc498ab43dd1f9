"""Open every page of the built documentation in headless Chromium, offline.

    python scripts/check_docs.py [--html docs/_build/html] [--out docs/_build/screenshots]

For each HTML page: load it from file://, with every non-file request blocked
and recorded (no DNS either: ``--host-resolver-rules``), wait for MathJax to
finish, then check that

* no request left the machine (anything but file:, data:, blob:, about:);
* no JavaScript exception was thrown and nothing was logged as an error
  (a missing local file, a blocked font, a MathJax load failure);
* every formula Sphinx wrote (``.math`` elements) was typeset by MathJax, none
  is a MathJax error, and no raw ``\\(`` or ``\\[`` is left in the page's text
  outside code blocks;
* at 1280 px no code block or display formula is cut at the column's edge (it
  would scroll sideways), and nothing outside a scroll box (tables have one) is
  wider than the column;

and write a 1280-px-wide screenshot of the whole page (cut at 12,000 px) to the
output folder. Exit status 0 when every page passes, 1 otherwise, 2 when the
site or Chromium is missing.

Chromium is driven through its DevTools protocol over ``--remote-debugging-pipe``
(file descriptors 3 and 4): no TCP port, and nothing beyond the standard library.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from urllib.parse import unquote, urlparse

WIDTH = 1280
HEIGHT = 900
MAX_HEIGHT = 12000
LOCAL_SCHEMES = ("file", "data", "blob", "about", "chrome-error", "devtools")

# Run in the page once it has loaded: MathJax's promise, then the DOM checks.
WAIT_MATHJAX = """
(async () => {
  if (document.fonts && document.fonts.ready) { await document.fonts.ready; }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
    if (MathJax.typesetPromise) { await MathJax.typesetPromise(); }
  }
  return true;
})()
"""
INSPECT = r"""
(() => {
  const math = Array.from(document.querySelectorAll('.math'));
  const untypeset = math.filter(e => !e.querySelector('mjx-container'))
                        .map(e => e.textContent.trim().slice(0, 80));
  const errors = Array.from(document.querySelectorAll('mjx-merror'))
                      .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80));
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(n) {
      for (let p = n.parentElement; p; p = p.parentElement) {
        const t = p.tagName;
        if (t === 'PRE' || t === 'CODE' || t === 'SCRIPT' || t === 'STYLE' ||
            t === 'TEXTAREA' || t === 'MJX-ASSISTIVE-MML' ||
            p.classList.contains('highlight')) { return NodeFilter.FILTER_REJECT; }
      }
      return NodeFilter.FILTER_ACCEPT;
    }
  });
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const s = n.nodeValue;
    const i = Math.max(s.indexOf('\\('), s.indexOf('\\['));
    if (i >= 0) { raw.push(s.slice(Math.max(0, i - 20), i + 60).trim()); }
  }
  const wide = [];
  const col = document.querySelector('.bd-article') || document.body;
  const right = col.getBoundingClientRect().right + 1;
  for (const e of col.querySelectorAll('img, table, div.math, div.highlight')) {
    const r = e.getBoundingClientRect();
    let boxed = false;
    for (let p = e.parentElement; p && p !== col; p = p.parentElement) {
      const ov = getComputedStyle(p).overflowX;
      if (ov === 'auto' || ov === 'scroll' || ov === 'hidden') { boxed = true; break; }
    }
    if (!boxed && r.width > 0 && r.right > right) {
      wide.push(e.tagName.toLowerCase() + ' ' + Math.round(r.right - right) + 'px');
    }
  }
  // Code and display formulas must fit the column (a line cut at the edge
  // hides what it says); tables may scroll sideways in their own box.
  const cut = [];
  for (const e of col.querySelectorAll('pre, div.math')) {
    if (e.scrollWidth > e.clientWidth + 1) {
      const longest = e.textContent.split('\n').reduce((a, b) => a.length >= b.length ? a : b, '');
      cut.push(`${e.scrollWidth - e.clientWidth}px: ${longest.trim().slice(0, 70)}`);
    }
  }
  return {math: math.length, cut, typeset: document.querySelectorAll('mjx-container').length,
          untypeset, errors, raw, wide, height: document.documentElement.scrollHeight,
          mathjax: !!window.MathJax};
})()
"""


class Chromium:
    """The DevTools protocol over Chromium's --remote-debugging-pipe."""

    def __init__(self, exe, profile):
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def setup_fds():
            # Move the pipe ends above any fd we are about to overwrite, then
            # put them on 3 (Chromium reads) and 4 (Chromium writes).
            a = os.dup(to_child_r) if to_child_r < 5 else to_child_r
            b = os.dup(from_child_w) if from_child_w < 5 else from_child_w
            a, b = (os.dup(a) if a < 5 else a), (os.dup(b) if b < 5 else b)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        args = [exe, "--headless=new", "--remote-debugging-pipe", "--no-sandbox",
                "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                "--disable-features=Translate,MediaRouter,OptimizationHints",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
                "--force-device-scale-factor=1", f"--window-size={WIDTH},{HEIGHT}",
                f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=setup_fds, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, params=None, session=None, timeout=60.0):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method, session, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == method and m.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def pages(root):
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        out += [os.path.join(folder, f) for f in sorted(files) if f.endswith(".html")]
    return out


def check_page(cr, session, path, shots, root):
    """Load one page; return (problems, info)."""
    cr.events.clear()
    url = "file://" + os.path.abspath(path)
    cr.send("Page.navigate", {"url": url}, session)
    cr.wait_event("Page.loadEventFired", session, timeout=60)
    res = cr.send("Runtime.evaluate", {"expression": WAIT_MATHJAX, "awaitPromise": True,
                                       "returnByValue": True}, session, timeout=60)
    if "exceptionDetails" in res:
        cr.events.append({"method": "Runtime.exceptionThrown", "sessionId": session,
                          "params": {"exceptionDetails": res["exceptionDetails"]}})
    info = cr.send("Runtime.evaluate", {"expression": INSPECT, "returnByValue": True},
                   session)["result"]["value"]
    # Let late requests and log entries arrive before reading the events.
    cr.send("Runtime.evaluate", {"expression": "new Promise(r => setTimeout(r, 300))",
                                 "awaitPromise": True}, session)
    problems = []
    for ev in cr.events:
        if ev.get("sessionId") != session:
            continue
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Network.requestWillBeSent":
            req = p["request"]["url"]
            if urlparse(req).scheme not in LOCAL_SCHEMES:
                problems.append(f"network request: {req[:120]}")
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = (d.get("exception") or {}).get("description") or d.get("text", "")
            problems.append(f"JavaScript error: {text.splitlines()[0][:160] if text else d}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            problems.append(f"console.error: {args[:160]}")
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            e = p["entry"]
            problems.append(f"browser error: {e.get('text', '')[:120]} {e.get('url', '')[:100]}")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            problems.append("failed to load a resource: "
                            + (p.get('errorText') or '') + ' ' + (p.get('blockedReason') or ''))
    if info["math"] and not info["mathjax"]:
        problems.append(f"{info['math']} formula(s) but MathJax did not load")
    for t in info["untypeset"][:5]:
        problems.append(f"formula not typeset: {t}")
    for t in info["errors"][:5]:
        problems.append(f"MathJax error: {t}")
    for t in info["raw"][:5]:
        problems.append(f"raw TeX in the page: {t}")
    for t in info["wide"][:5]:
        problems.append(f"wider than the text column, no scroll box: {t}")
    for t in info["cut"][:5]:
        problems.append(f"code or formula cut at the column edge by {t}")
    if shots:
        h = max(HEIGHT, min(int(info["height"]), MAX_HEIGHT))
        cr.send("Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": h, "deviceScaleFactor": 1, "mobile": False}, session)
        png = cr.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False},
                      session, timeout=120)["data"]
        cr.send("Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
                session)
        name = os.path.relpath(path, root)[:-len(".html")].replace(os.sep, "__") + ".png"
        with open(os.path.join(shots, name), "wb") as fh:
            fh.write(base64.b64decode(png))
    return problems, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", default="docs/_build/html", help="the built site")
    ap.add_argument("--out", default="docs/_build/screenshots",
                    help="folder for the 1280-px screenshots ('' for none)")
    ap.add_argument("pages", nargs="*", help="only these pages (paths under --html)")
    args = ap.parse_args(argv)
    root = os.path.abspath(args.html)
    if not os.path.isfile(os.path.join(root, "index.html")):
        print(f"check_docs: no built site in {args.html} (expected index.html there)",
              file=sys.stderr)
        return 2
    exe = find_chromium()
    if exe is None:
        print("check_docs: no chromium found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    todo = [os.path.join(root, p) for p in args.pages] if args.pages else pages(root)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    failed = 0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cc-chromium-") as profile:
        cr = Chromium(exe, profile)
        try:
            target = cr.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cr.send("Target.attachToTarget",
                              {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                cr.send(f"{domain}.enable", {}, session)
            cr.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*",
                                                        "wss://*", "ftp://*"]}, session)
            cr.send("Emulation.setDeviceMetricsOverride",
                    {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1,
                     "mobile": False}, session)
            for path in todo:
                rel = os.path.relpath(path, root)
                try:
                    problems, info = check_page(cr, session, path, args.out, root)
                except (TimeoutError, RuntimeError) as exc:
                    problems, info = [f"could not check: {exc}"], {"math": 0, "typeset": 0}
                status = "ok  " if not problems else "FAIL"
                print(f"{status} {rel}  ({info['math']} formulas, "
                      f"{info['typeset']} typeset)", flush=True)
                for p in problems:
                    print(f"       {p}")
                failed += bool(problems)
        finally:
            cr.close()
    print(f"{len(todo) - failed} of {len(todo)} pages pass "
          f"({time.monotonic() - t0:.0f} s)" + (f"; screenshots in {args.out}" if args.out else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
