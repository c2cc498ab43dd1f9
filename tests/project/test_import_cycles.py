"""No import cycle among convcore's modules: scripts/import_cycles.py reads
the import statements of every module with ``ast`` and finds the strongly
connected components of the graph; checked first on small hand-made packages
(a cycle it must find, a deferred import it must tell apart)."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "import_cycles.py")

pytestmark = pytest.mark.skipif(
    not os.path.isfile(SCRIPT) or not os.path.isfile(os.path.join(ROOT, "convcore", "nn",
                                                                  "module.py")),
    reason="needs the source tree (scripts/ and convcore/ sources)")


@pytest.fixture(scope="module")
def ic():
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _package(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / "convcore" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


def test_a_cycle_through_three_modules_is_found(tmp_path, ic):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from convcore import b\n",
        "b.py": "from convcore.c import thing\n",
        "c.py": "try:\n    from . import a\nexcept ImportError:\n    pass\nthing = 1\n",
        "d.py": "import convcore.a\n",
    })
    assert ic.cycles(ic.graph(root)) == [["convcore.a", "convcore.b", "convcore.c"]]
    assert ic.main([root]) == 1


def test_an_import_inside_a_function_counts_only_as_deferred(tmp_path, ic):
    root = _package(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "from convcore.sub.low import f\n",
        "sub/low.py": "def f():\n    from ..sub import high\n    return high\n",
        "sub/high.py": "from .low import f\n",
    })
    assert ic.cycles(ic.graph(root)) == []
    assert ic.cycles(ic.graph(root, deferred=True)) == [["convcore.sub.high",
                                                          "convcore.sub.low"]]


def test_convcore_has_no_import_cycle(ic):
    g = ic.graph(ROOT)
    assert "convcore.nn.module" in g and "convcore.train" in g
    assert ic.cycles(g) == []


def test_nn_io_and_module_are_not_tied_to_each_other(ic):
    # the state-dict check lives in nn/_io.py; module.py imports it, not the reverse
    g = ic.graph(ROOT, deferred=True)
    assert "convcore.nn._io" in g["convcore.nn.module"]
    assert not {m for m in g["convcore.nn._io"] if m.startswith("convcore.nn")}
    assert not any("convcore.nn._io" in c for c in ic.cycles(g))
