"""scripts/check_docs.py against small hand-made sites: it passes a page whose
formula MathJax typesets from a local copy, and fails pages that load a script
from the network, throw a JavaScript error, leave TeX raw or cut a code line.
Needs Debian's chromium and a local MathJax 3 (the docs extra); skipped without."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "check_docs.py")

chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser")
                 if shutil.which(n)), None)
pytestmark = [
    pytest.mark.skipif(chromium is None, reason="needs chromium (apt-get install chromium)"),
    pytest.mark.skipif(not os.path.isfile(SCRIPT),
                       reason="needs the source tree's scripts/ (not in the wheel check)"),
]


def _mathjax_dir():
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = os.path.join(list(spec.submodule_search_locations)[0], "static", "mathjax")
    return d if os.path.isfile(os.path.join(d, "tex-chtml.js")) else None


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">{head}</head>
<body><article class="bd-article" style="width: 600px">{body}</article></body></html>"""
MATH = '<p>inline <span class="math notranslate nohighlight">\\(x^2 + 1\\)</span></p>'


def _site(tmp_path, pages, mathjax=None):
    root = tmp_path / "html"
    root.mkdir()
    if mathjax:
        shutil.copy(os.path.join(mathjax, "tex-chtml.js"), root / "tex-chtml.js")
        shutil.copytree(os.path.join(mathjax, "output", "chtml"), root / "output" / "chtml")
    pages = {"index.html": ("", "<p>front page</p>"), **pages}
    for name, (head, body) in pages.items():
        (root / name).write_text(PAGE.format(head=head, body=body))
    return root


def _run(root, *pages):
    r = subprocess.run([sys.executable, SCRIPT, "--html", str(root), "--out", "", *pages],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_local_mathjax_page_passes(tmp_path):
    mj = _mathjax_dir()
    if mj is None:
        pytest.skip("needs the docs extra's local MathJax (sphinx-mathjax-offline)")
    root = _site(tmp_path, {"math.html": ('<script defer src="tex-chtml.js"></script>', MATH)},
                 mathjax=mj)
    rc, out = _run(root, "index.html", "math.html")
    assert rc == 0, out
    assert "ok   math.html  (1 formulas, 1 typeset)" in out


def test_failures_are_reported(tmp_path):
    root = _site(tmp_path, {
        "cdn.html": ('<script src="https://cdn.example.invalid/mathjax/tex-chtml.js"></script>',
                     MATH),
        "jserror.html": ("", "<script>notDefinedAnywhere();</script><p>x</p>"),
        "cut.html": ("", "<pre style='overflow-x: auto'>" + "y = 1  # " + "z" * 300 + "</pre>"),
    })
    rc, out = _run(root, "cdn.html", "jserror.html", "cut.html")
    assert rc == 1, out
    cdn = out[out.index("cdn.html"):out.index("jserror.html")]
    assert "network request: https://cdn.example.invalid/" in cdn
    assert "formula not typeset" in cdn and "raw TeX in the page" in cdn
    assert "ReferenceError" in out[out.index("jserror.html"):out.index("cut.html")]
    assert "cut at the column edge" in out[out.index("cut.html"):]
    assert "0 of 3 pages pass" in out


def test_missing_site_is_a_usage_error(tmp_path):
    rc, out = _run(tmp_path / "nothing-here")
    assert rc == 2 and "no built site" in out
