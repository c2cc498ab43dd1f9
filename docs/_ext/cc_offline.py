"""MathJax served by the site itself, so formulas typeset with no network.

Sphinx's ``sphinx.ext.mathjax`` loads MathJax from a CDN by default; a page
read offline, or behind a proxy, then shows raw TeX. This extension points
``mathjax_path`` at ``_static/mathjax/tex-chtml.js`` and copies MathJax 3 into
the built site: the combined ``tex-chtml.js`` component and the folders it loads
from at run time (TeX extensions, CommonHTML fonts, menu, accessibility).

Where MathJax comes from, first match wins:

* ``$CONVCORE_MATHJAX_DIR``: any MathJax 3 ``es5`` folder (one holding
  ``tex-chtml.js``), e.g. Debian's ``/usr/share/nodejs/mathjax-full/es5``;
* the ``sphinx-mathjax-offline`` package from PyPI (the ``docs`` extra), used
  here only as a packaged copy of MathJax's files.
"""
from __future__ import annotations

import importlib.util
import os
import shutil

from sphinx.errors import ConfigError

ENTRY = "tex-chtml.js"
TARGET = "mathjax"                       # under _static/
SKIP = ("output/svg",)                   # the SVG output is not used


def mathjax_source() -> str:
    """The folder holding MathJax 3's ``tex-chtml.js`` and its components."""
    env = os.environ.get("CONVCORE_MATHJAX_DIR")
    if env:
        if not os.path.isfile(os.path.join(env, ENTRY)):
            raise ConfigError(f"CONVCORE_MATHJAX_DIR must be a MathJax 3 folder holding "
                              f"{ENTRY}, got {env!r}")
        return env
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            cand = os.path.join(loc, "static", "mathjax")
            if os.path.isfile(os.path.join(cand, ENTRY)):
                return cand
    raise ConfigError("no local copy of MathJax 3 found: install the docs extra "
                      "(pip install \".[docs]\", which brings sphinx-mathjax-offline) "
                      "or set CONVCORE_MATHJAX_DIR to a folder holding " + ENTRY)


def _config_inited(app, config):
    # Only where the site is written as HTML; other builders (doctest) need no copy.
    config.mathjax_path = f"{TARGET}/{ENTRY}"


def _copy(app, exc):
    if exc is not None or app.builder.format != "html":
        return
    src = mathjax_source()
    dst = os.path.join(app.outdir, "_static", TARGET)
    os.makedirs(dst, exist_ok=True)
    shutil.copy2(os.path.join(src, ENTRY), os.path.join(dst, ENTRY))
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if not os.path.isdir(path):
            continue             # other combined components (tex-svg.js, ...) unused

        def ignore(folder, names, _src=src):
            rel = os.path.relpath(folder, _src).replace(os.sep, "/")
            return [n for n in names if f"{rel}/{n}" in SKIP]
        shutil.copytree(path, os.path.join(dst, name), ignore=ignore, dirs_exist_ok=True)


def _check_source(app):
    if app.builder.format == "html":
        mathjax_source()          # fail early, before reading any page


def setup(app):
    app.connect("config-inited", _config_inited)
    app.connect("builder-inited", _check_source)
    app.connect("build-finished", _copy)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
