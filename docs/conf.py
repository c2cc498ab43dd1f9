"""Sphinx configuration for convcore's documentation.

The site builds offline: no intersphinx, no remote theme, every figure drawn by
code at build time and every example run by ``sphinx-build -b doctest``.
It documents the convcore that Python imports: build the extension in place and
run with ``PYTHONPATH=.`` from the repository root, or install the package.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

import convcore  # noqa: E402

project = "convcore"
author = "the convcore developers"
copyright = "the convcore developers"
release = convcore.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "cc_docs",
]

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
html_theme = "alabaster"
html_static_path = []
html_title = f"convcore {release}"
html_theme_options = {
    "description": "CNNs from a hand-written C core",
    "fixed_sidebar": True,
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_show_sourcelink = False
pygments_style = "sphinx"
nitpicky = False

# autodoc + numpydoc: every public name documented from its docstring.
autodoc_default_options = {"members": True, "undoc-members": False,
                           "member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()
autosummary_generate = False   # numpydoc loads autosummary; nothing here is generated

# Narrative examples are ``.. doctest::`` blocks: `sphinx-build -b doctest` runs
# them all. Docstring examples shown by autodoc are plain ``>>>`` blocks, which
# rely on their module's globals: those run under `pytest --doctest-modules`.
doctest_global_setup = """
import numpy as np
import convcore as cc
"""
doctest_test_doctest_blocks = ""
trim_doctest_flags = True

# Figures are produced by code at build time.
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.dpi": 100, "savefig.bbox": "tight", "font.size": 9}
plot_pre_code = """
import numpy as np
import matplotlib.pyplot as plt
import convcore as cc
"""
