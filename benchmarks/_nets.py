"""The layers the notes' networks are made of, found by shape inference.

Nothing here is a hand-kept list of layers: every shape comes from building
the network with ``convcore.models`` and walking it with the machinery of
``convcore.summary`` (which computes each layer's output shape from its input
shape without running anything).  Each module's ``_summary`` is wrapped for
the walk so that its input shape is recorded too; the wrappers are removed
afterwards.

Only the functions that enumerate import convcore, so a peer's process that
imports this module for the network table imports NumPy alone.
"""
from __future__ import annotations

from collections import OrderedDict

# name: (model function, keyword arguments, input (C, H, W), default batches)
NETWORKS = OrderedDict([
    ("lenet5", ("lenet5", {"num_classes": 10}, (1, 28, 28), (1, 8, 64))),
    ("alexnet", ("alexnet", {}, (3, 227, 227), (1, 8))),
    ("vgg11", ("vgg11", {}, (3, 224, 224), (1, 8))),
    ("vgg11-32", ("vgg11", {"num_classes": 10}, (3, 32, 32), (1, 8, 64))),
    ("vgg16", ("vgg16", {}, (3, 224, 224), (1, 8))),
    ("vgg16-32", ("vgg16", {"num_classes": 10}, (3, 32, 32), (1, 8, 64))),
    ("googlenet", ("googlenet", {}, (3, 224, 224), (1, 8))),
    ("resnet18", ("resnet18", {}, (3, 224, 224), (1, 8))),
    ("resnet18-32", ("resnet18", {"num_classes": 10}, (3, 32, 32), (1, 8, 64))),
    ("resnet34", ("resnet34", {}, (3, 224, 224), (1, 8))),
    ("resnet34-32", ("resnet34", {"num_classes": 10}, (3, 32, 32), (1, 8, 64))),
    ("resnet50", ("resnet50", {}, (3, 224, 224), (1, 8))),
    ("resnet50-32", ("resnet50", {"num_classes": 10}, (3, 32, 32), (1, 8, 64))),
])
QUICK_NETWORKS = ("lenet5", "resnet18-32")


def build(name, rng=0, dtype=None):
    """The convcore network ``name`` of :data:`NETWORKS` (seeded weights)."""
    from convcore import models
    fn, kw, _, _ = NETWORKS[name]
    kw = dict(kw, rng=rng)
    if dtype is not None:
        kw["dtype"] = dtype
    return getattr(models, fn)(**kw)


def trace(model, input_shape):
    """``[(name, module, input_shape, output_shape)]`` for every module the
    summary walk visits (containers and blocks included), in walk order."""
    import convcore
    names = {id(m): n for n, m in model.named_modules()}
    seen = []
    wrapped = []
    for _, m in model.named_modules():
        orig = m._summary

        def rec(shape, prefix, rows, _m=m, _orig=orig):
            out = _orig(shape, prefix, rows)
            seen.append((names.get(id(_m), prefix), _m, tuple(int(s) for s in shape),
                         tuple(int(s) for s in out)))
            return out
        object.__setattr__(m, "_summary", rec)
        wrapped.append(m)
    try:
        convcore.summary(model, tuple(input_shape))
    finally:
        for m in wrapped:
            m.__dict__.pop("_summary", None)
    return seen


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def conv_key(conv, in_shape):
    """Geometry of one convolution (batch excluded): a hashable tuple."""
    _, C, H, W = in_shape
    pad = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
    return (C, H, W, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride), pad,
            tuple(conv.dilation), conv.groups, conv.bias is not None)


def conv_layers(name, model=None):
    """Every distinct convolution of network ``name`` at batch 1.

    Returns a list of dicts (``C, H, W, K, kernel, stride, padding, dilation,
    groups, bias, out`` and ``names``: every module path with that geometry,
    ``count``), in order of first appearance."""
    from convcore.nn import Conv2d
    if model is None:
        model = build(name)
    C, H, W = NETWORKS[name][2]
    out = OrderedDict()
    for path, m, ishape, oshape in trace(model, (1, C, H, W)):
        if not isinstance(m, Conv2d):
            continue
        key = conv_key(m, ishape)
        if key not in out:
            c, h, w, k, ks, st, pad, dil, g, bias = key
            out[key] = {"C": c, "H": h, "W": w, "K": k, "kernel": list(ks), "stride": list(st),
                        "padding": pad if isinstance(pad, str) else list(pad),
                        "dilation": list(dil), "groups": g, "bias": bias,
                        "out": list(oshape[2:]), "names": []}
        out[key]["names"].append(path)
    rows = list(out.values())
    for r in rows:
        r["count"] = len(r["names"])
    return rows


def layer_label(r):
    """Short text for one geometry: ``64x56x56 -> 128 3x3/2 p1``."""
    pad = r["padding"] if isinstance(r["padding"], str) else \
        (r["padding"][0] if r["padding"][0] == r["padding"][1] else tuple(r["padding"]))
    ks = r["kernel"]
    st = r["stride"][0] if r["stride"][0] == r["stride"][1] else tuple(r["stride"])
    g = f" g{r['groups']}" if r["groups"] != 1 else ""
    return f"{r['C']}x{r['H']}x{r['W']}->{r['K']} {ks[0]}x{ks[1]}/{st} p{pad}{g}"


def flops(r, n):
    """Forward flops of layer ``r`` at batch ``n`` (backward: twice that)."""
    oh, ow = r["out"]
    return 2.0 * n * r["K"] * oh * ow * (r["C"] // r["groups"]) * r["kernel"][0] * r["kernel"][1]


def other_ops(name, model=None):
    """The non-convolution ops of network ``name`` at batch 1, distinct by
    (op, shape, hyper-parameters): max/avg/adaptive pooling, LRN, ReLU,
    Linear, the residual add (a block's output shape), the Inception
    concatenation (its branches' channel counts) and the loss (logits shape)."""
    from convcore import nn
    blocks = tuple(getattr(nn, n) for n in ("BasicBlock", "Bottleneck") if hasattr(nn, n))
    inception = getattr(nn, "Inception", None)
    if model is None:
        model = build(name)
    C, H, W = NETWORKS[name][2]
    found = OrderedDict()
    seen = trace(model, (1, C, H, W))
    by_id = {id(m): (p, i, o) for p, m, i, o in seen}

    def add(op, shape, params, path):
        key = (op, tuple(shape), repr(sorted(params.items())))
        if key not in found:
            found[key] = {"op": op, "shape": list(shape), "params": dict(params), "names": []}
        found[key]["names"].append(path)

    last_out = None
    for path, m, ishape, oshape in seen:
        if isinstance(m, nn.MaxPool2d):
            add("max_pool", ishape, {"kernel": list(_pair(m.kernel_size)),
                                     "stride": list(_pair(m.stride)),
                                     "padding": list(_pair(m.padding)),
                                     "ceil_mode": bool(m.ceil_mode)}, path)
        elif isinstance(m, nn.AvgPool2d):
            add("avg_pool", ishape, {"kernel": list(_pair(m.kernel_size)),
                                     "stride": list(_pair(m.stride)),
                                     "padding": list(_pair(m.padding))}, path)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if tuple(ishape[2:]) != tuple(oshape[2:]):   # an identity runs no kernel
                add("adaptive_avg_pool", ishape, {"output_size": list(oshape[2:])}, path)
        elif isinstance(m, nn.LocalResponseNorm):
            add("lrn", ishape, {"size": m.size, "alpha": m.alpha, "beta": m.beta, "k": m.k},
                path)
        elif isinstance(m, nn.ReLU):
            add("relu", ishape, {}, path)
        elif isinstance(m, nn.Linear):
            add("linear", ishape, {"out_features": m.out_features,
                                   "bias": m.bias is not None}, path)
        elif blocks and isinstance(m, blocks):
            add("residual_add", oshape, {}, path)
            add("relu", oshape, {}, path + " (after the add)")
        elif inception is not None and isinstance(m, inception):
            splits = []
            for b in m._branches():
                splits.append(by_id[id(b)][2][1])
            add("concat", oshape, {"splits": splits}, path)
        if len(oshape) == 2:
            last_out = oshape
    if last_out is not None:
        add("cross_entropy", last_out, {}, "loss")
    rows = list(found.values())
    for r in rows:
        r["count"] = len(r["names"])
    return rows
