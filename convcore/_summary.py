"""summary(): the per-layer table of the notes -- output shape, activations,
parameters and multiply-accumulates -- computed from shapes alone (nothing
is run, so full-size networks cost nothing)."""
from __future__ import annotations

import numpy as np


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


class Summary:
    """The result of :func:`summary`: ``rows`` (one dict per layer with keys
    ``name, type, output_shape, activations, activation_bytes, params,
    weights, macs``) and totals; ``str()`` gives the table."""

    def __init__(self, rows, input_shape, itemsize):
        self.rows = rows
        self.input_shape = tuple(input_shape)
        self.itemsize = itemsize
        layers = [r for r in rows if r["type"] != "Input"]
        self.total_params = sum(r["params"] for r in rows)
        self.total_weights = sum(r["weights"] for r in rows)
        self.total_macs = sum(r["macs"] for r in rows)
        self.total_activations = sum(r["activations"] for r in rows)
        self.total_activation_bytes = self.total_activations * itemsize
        self.output_shape = layers[-1]["output_shape"] if layers else self.input_shape

    def by_type(self, key):
        """``{layer type: sum of key}`` (e.g. ``by_type('params')``)."""
        out = {}
        for r in self.rows:
            out[r["type"]] = out.get(r["type"], 0) + r[key]
        return out

    def to_dict(self):
        return {"rows": [dict(r) for r in self.rows], "input_shape": self.input_shape,
                "total_params": self.total_params, "total_weights": self.total_weights,
                "total_macs": self.total_macs, "total_activations": self.total_activations,
                "total_activation_bytes": self.total_activation_bytes}

    def __str__(self):
        head = ("layer", "type", "output shape", "activations", "act. memory", "params",
                "MACs")
        body = [(r["name"], r["type"], "x".join(str(s) for s in r["output_shape"][1:]),
                 f"{r['activations']:,}", _fmt_bytes(r["activation_bytes"]),
                 f"{r['params']:,}", f"{r['macs']:,}") for r in self.rows]
        total = ("total", "", "", f"{self.total_activations:,}",
                 _fmt_bytes(self.total_activation_bytes), f"{self.total_params:,}",
                 f"{self.total_macs:,}")
        widths = [max(len(row[i]) for row in [head, total] + body) for i in range(len(head))]
        right = {3, 4, 5, 6}

        def line(row):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        rule = "-" * len(line(head))
        return "\n".join([line(head), rule] + [line(b) for b in body] + [rule, line(total)])

    def __repr__(self):
        return (f"Summary({len(self.rows)} rows, params={self.total_params:,}, "
                f"MACs={self.total_macs:,})")


def summary(model, input_shape, dtype=None):
    """Per-layer output shapes, activations, parameters and MACs of ``model``.

    Parameters
    ----------
    model : convcore.nn.Module
    input_shape : tuple
        ``(C, H, W)`` (a batch of one) or ``(N, C, H, W)``.
    dtype : dtype, optional
        Element type for activation bytes (default: the model's parameters').

    Returns
    -------
    Summary
        ``.rows`` (list of dicts), totals, and a printable table.

    Notes
    -----
    Activations are the elements of each layer's output (the notes' "memory");
    ``weights`` counts parameters without biases (the notes' "params");
    MACs are the multiply-accumulates of convolutions and FC layers.

    Examples
    --------
    >>> import convcore as cc
    >>> s = cc.summary(cc.models.vgg16(rng=0), (3, 224, 224))
    >>> r = s.rows[1]
    >>> r["output_shape"], r["activations"], r["weights"]
    ((1, 64, 224, 224), 3211264, 1728)
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if dtype is None:
        p = next(iter(model.parameters()), None)
        dtype = np.float32 if p is None else p.dtype
    itemsize = np.dtype(dtype).itemsize
    rows = [{"name": "input", "type": "Input", "output_shape": shape, "params": 0,
             "weights": 0, "macs": 0}]
    model._summary(shape, "", rows)
    for r in rows:
        n = 1
        for s in r["output_shape"]:
            n *= int(s)
        r["activations"] = n
        r["activation_bytes"] = n * itemsize
    return Summary(rows, shape, itemsize)
