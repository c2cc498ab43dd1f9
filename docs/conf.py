"""Sphinx configuration for convcore's documentation.

The site builds and reads offline: no intersphinx, a theme installed with pip,
MathJax served from the site itself (``cc_offline``), every figure drawn by code
at build time, the gallery's scripts run by sphinx-gallery and every example
run by ``sphinx-build -b doctest``. ``scripts/check_docs.sh`` opens each page in
headless Chromium with the network cut off to check that this holds.
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
    "sphinx_copybutton",
    "sphinx_gallery.gen_gallery",
    "cc_docs",
    "cc_offline",
]

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "_recorded"]
templates_path = []
html_theme = "pydata_sphinx_theme"
html_static_path = ["_static"]
html_css_files = ["convcore.css"]
html_title = f"convcore {release}"
html_theme_options = {
    "logo": {"text": f"convcore {release}"},
    "navbar_align": "left",
    "navbar_end": ["theme-switcher"],
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "show_prev_next": True,
    "footer_start": ["copyright"],
    "footer_center": [],
    "footer_end": ["sphinx-version"],
    # No right-hand sidebar: the text column gets its width (code lines of 90
    # characters, wide formulas and the benchmark tables fit at 1280 px); the
    # page's own table of contents sits under the section navigation instead.
    "secondary_sidebar_items": [],
}
html_sidebars = {"**": ["sidebar-nav-bs", "page-toc"], "index": ["page-toc"],
                 "gallery/index": [], "search": [], "genindex": [], "py-modindex": []}
html_context = {"default_mode": "light"}
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

# Figures are produced by code at build time. Their source is hidden unless a
# page asks for it with ``:include-source: true`` (where the code is the lesson).
# Constrained layout keeps titles and labels inside the image.
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 100)]
plot_rcparams = {"figure.dpi": 100, "savefig.bbox": "tight", "font.size": 10,
                 "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
                 "xtick.labelsize": 9, "ytick.labelsize": 9,
                 "figure.constrained_layout.use": True}
plot_pre_code = """
import warnings
import numpy as np
import matplotlib.pyplot as plt
import convcore as cc
# A page's own fig.tight_layout() replaces the constrained layout set above;
# both keep labels inside the image, so that switch needs no warning.
warnings.filterwarnings("ignore", "The figure layout has changed to tight")
"""

# Copy buttons on code blocks copy the code only: no ``>>>``/``...`` prompts and
# no output lines.
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True
copybutton_exclude = ".linenos, .gp, .go"

# The gallery: examples/*.py rendered as pages. Scripts named plot_*.py run at
# every build (their printed output and figures come from that run); the others
# train on full datasets and show output recorded from a run of them
# (docs/_recorded/).
sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["gallery"],
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"/_",
    "within_subsection_order": "cc_gallery.ExampleOrder",
    "download_all_examples": False,
    "show_signature": False,
    "show_memory": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "capture_repr": (),
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "min_reported_time": 3600,
    "write_computation_times": False,
    "reset_modules": ("matplotlib",),
    "default_thumb_file": None,
}
