"""The contract between the functional layer and its backends.

Both backends offer the same functions, nothing above them asks which one
it has, and the named geometries match the C core's structs field by field.
"""
import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import convcore as cc
from convcore._geometry import ConvGeom, PoolGeom
from convcore.backends import cpu, cuda

PKG = Path(cc.__file__).resolve().parent
HEADER = PKG.parent / "src_c" / "convcore.h"


def _functions(mod):
    return {n for n, f in vars(mod).items()
            if not n.startswith("_") and inspect.isfunction(f) and f.__module__ == mod.__name__}


def test_cpu_and_cuda_backends_offer_the_same_functions():
    shared = {"empty", "zeros", "ascontiguous", "to_numpy"}
    own_cuda = {"is_available", "kernel_source", "name_expressions", "to_host", "to_device"}
    own_cpu = {"plan",                 # the planner's answer, for tools and tests
               # weights packed once for eval-mode folds (the CPU's Winograd
               # forward; convcore._ops.conv._conv2d_packed asks with getattr)
               "conv2d_packable", "conv2d_pack", "conv2d_forward_packed"}
    assert shared <= _functions(cpu)
    assert _functions(cpu) - own_cpu == _functions(cuda) - own_cuda, (
        sorted(_functions(cpu) ^ _functions(cuda)))
    for name in ("relu", "relu_backward", "relu_mask", "relu_inplace", "relu_backward_mask", "batch_norm", "batch_norm_backward",
                 "cross_entropy", "cross_entropy_backward", "conv2d_backward_input",
                 "index_dtype", "local_response_norm", "local_response_norm_backward"):
        assert (inspect.signature(getattr(cpu, name)).parameters.keys()
                == inspect.signature(getattr(cuda, name)).parameters.keys()), name


def _backend_name_tests(tree):
    """Comparisons of something's ``.name`` with "cpu" or "cuda"."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node.left] + list(node.comparators)
            names = [p for p in parts if isinstance(p, ast.Attribute) and p.attr == "name"]
            consts = [p for p in parts if isinstance(p, ast.Constant)
                      and p.value in ("cpu", "cuda")]
            if names and consts:
                found.append(node.lineno)
    return found


def test_the_layers_above_the_backends_never_ask_which_backend_they_have():
    offenders = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "backends":
            continue
        lines = _backend_name_tests(ast.parse(path.read_text()))
        if lines:
            offenders[str(rel)] = lines
    assert not offenders


def test_the_scan_finds_a_backend_test_when_there_is_one():
    tree = ast.parse("if be.name == 'cpu':\n    pass\n")
    assert _backend_name_tests(tree) == [1]


def _struct_fields(struct):
    text = HEADER.read_text()
    body = re.search(r"typedef struct \{([^}]*)\}\s*" + struct + ";", text).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    fields = []
    for decl in body.split(";"):
        decl = decl.strip()
        if decl:
            fields += [f.strip() for f in re.sub(r"^\w+\s+", "", decl).split(",")]
    return fields


@pytest.mark.skipif(not HEADER.exists(), reason="needs the source tree's src_c/")
def test_named_geometries_follow_the_c_structs_field_by_field():
    assert list(ConvGeom._fields) == _struct_fields("cc_conv_geom")
    assert list(PoolGeom._fields) == _struct_fields("cc_pool_geom")


def test_conv_plans_are_cached_by_value_not_by_identity():
    g1 = ConvGeom(2, 8, 9, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 9, 9, 1)
    g2 = ConvGeom(*list(g1))               # equal, another object
    assert g1 is not g2
    p1 = cpu.plan(g1, np.float32)
    assert cpu.plan(g2, np.float32) is p1
    assert cpu.plan(tuple(g1), np.float32) is p1
    assert cpu.plan(g1._replace(N=3), np.float32) is not p1
    assert 1 <= p1.chunk <= g1.N and p1.work_elems > 0


def test_a_geometry_of_the_wrong_length_is_refused_by_the_binding():
    from convcore._core import _conv
    with pytest.raises(TypeError, match="ConvGeom"):
        _conv.make_plan((1, 2, 3), 4, _conv.AUTO, False, 0)
