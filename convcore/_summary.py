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


STYLES = ("table", "notes", "listing")

# Layers the notes never list: they change no shape and hold no weights.
_SILENT = ("ReLU", "Dropout", "Flatten", "Identity", "Tanh", "Sigmoid", "LeakyReLU",
           "Dropout2d", "Softmax", "LogSoftmax")


def _short(n):
    """The notes' way of writing a count: exact below 10,000, else two
    significant figures with K (1e3) or M (1e6): 150K, 3.2M, 25K."""
    if n < 10_000:
        return str(n)
    sig = float(f"{n:.2g}")
    return f"{sig / 1e6:g}M" if sig >= 1e6 else f"{sig / 1e3:g}K"


def _hwc(shape):
    """``[HxWxC]`` of a (N, C, H, W) or (N, F) shape, the notes' order."""
    s = shape[1:]
    return "x".join(str(v) for v in ((s[1], s[2], s[0]) if len(s) == 3 else s))


# type -> (label, description) in the AlexNet-style listing
_LISTING_KINDS = {"MaxPool2d": ("MAX POOL", ""), "AvgPool2d": ("AVG POOL", ""),
                  "AdaptiveAvgPool2d": ("AVG POOL", "adaptive average"),
                  "LocalResponseNorm": ("NORM", "Normalization layer"),
                  "BatchNorm2d": ("BATCH NORM", "Normalization layer"),
                  "Add+ReLU": ("ADD", "shortcut + main path, then ReLU"),
                  "Concat": ("CONCAT", "branches stacked along channels"),
                  "PadShortcut": ("SHORTCUT", "identity subsampled, zero channels added")}


class Summary:
    """The result of :func:`summary`: ``rows`` (one dict per layer with keys
    ``name, type, output_shape, activations, activation_bytes, params,
    weights, macs``) and totals; ``str()`` gives the table (or, with
    ``style='notes'`` / ``'listing'``, the notes' two forms: :meth:`notes`
    and :meth:`listing`)."""

    def __init__(self, rows, input_shape, itemsize, style="table", layers=None):
        self.rows = rows
        self.style = style
        self._layers = layers or {}
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
        if self.style == "notes":
            return "\n".join(self.notes())
        if self.style == "listing":
            return "\n".join(self.listing())
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

    # ------------------------------------------------------- the notes' forms
    def _listed(self):
        """(row, module, input shape) of the layers the notes list, in order."""
        out, prev = [], self.input_shape
        for r in self.rows:
            m = self._layers.get(r["name"])
            shape = r["output_shape"]
            if r["type"] == "Input":
                out.append((r, None, shape))
            elif r["type"] not in _SILENT and not (
                    r["type"].startswith("Adaptive") and shape == prev):
                out.append((r, m, prev))
            if r["type"] != "Flatten":
                prev = shape
        return out

    def notes_rows(self):
        """The notes' memory-and-parameters listing as dicts: ``label``,
        ``dims`` (``'224x224x64'``), ``activations``, ``memory`` (the
        expression, e.g. ``'224*224*64=3.2M'``), ``weights`` (no biases),
        ``params`` (the expression, e.g. ``'(3*3*3)*64 = 1,728'``)."""
        out = []
        for r, m, in_shape in self._listed():
            t, shape, n = r["type"], r["output_shape"], r["activations"]
            dims = _hwc(shape) if len(shape) == 4 else f"1x1x{shape[-1]}"
            mem = (f"{'*'.join(dims.split('x'))}={_short(n)}" if len(shape) == 4 else str(n))
            w = r["weights"]
            if t == "Input":
                label, par = "INPUT", "0 (not counting biases)"
            elif t == "Conv2d" and m is not None:
                kh, kw = m.kernel_size
                k = str(kh) if kh == kw else f"{kh}x{kw}"
                label = f"CONV{k}-{m.out_channels}"
                par = f"({kh}*{kw}*{m.in_channels // m.groups})*{m.out_channels} = {w:,}"
            elif t == "Linear" and m is not None:
                label = "FC"
                fan = ("*".join(_hwc(in_shape).split("x")) if len(in_shape) == 4
                       and in_shape[2] * in_shape[3] > 1 else str(m.in_features))
                par = f"{fan}*{m.out_features} = {w:,}"
            else:
                ks = getattr(m, "kernel_size", None)
                kind = {"MaxPool2d": "POOL", "AvgPool2d": "AVGPOOL",
                        "LocalResponseNorm": "NORM", "BatchNorm2d": "BN"}.get(t, t.upper())
                label = kind + (str(ks[0]) if isinstance(ks, tuple) and ks[0] == ks[1]
                                else "")
                par = f"{w:,}"
            out.append({"label": label, "dims": dims, "activations": n, "memory": mem,
                        "weights": w, "params": par, "name": r["name"]})
        return out

    def notes(self):
        """The notes' VGG-style listing, one string per line, then the totals
        over the listed lines: ``CONV3-64: [224x224x64] memory: 224*224*64=3.2M
        params: (3*3*3)*64 = 1,728``."""
        rows = self.notes_rows()
        lines = [f"{r['label']}: [{r['dims']}] memory: {r['memory']} params: {r['params']}"
                 for r in rows]
        act = sum(r["activations"] for r in rows)
        w = sum(r["weights"] for r in rows)
        listed = {r["name"] for r in rows}
        params = sum(r["params"] for r in self.rows if r["name"] in listed)
        nbytes = act * self.itemsize
        lines.append(f"TOTAL memory: {act:,} activations * {self.itemsize} bytes = "
                     f"{nbytes:,} bytes ~= {nbytes / 2**20:.0f} MiB / image "
                     f"(forward pass only)")
        lines.append(f"TOTAL params: {w:,} (not counting biases; {params:,} with biases)")
        return lines

    def listing(self):
        """The notes' AlexNet-style listing, one string per line:
        ``[55x55x96] CONV1: 96 11x11 filters at stride 4, pad 0`` ...
        ``[1000] FC8: 1000 neurons (class scores)``."""
        items = self._listed()
        n_fc = sum(1 for r, _, _ in items if r["type"] == "Linear")
        lines, weight_layers, counts, fc_seen = [], 0, {}, 0
        for r, m, _ in items:
            t, dims = r["type"], "[" + _hwc(r["output_shape"]) + "]"
            if t == "Input":
                lines.append(f"{dims} INPUT")
                continue
            if t == "Conv2d" and m is not None:
                weight_layers += 1
                kh, kw = m.kernel_size
                pad = m.padding if isinstance(m.padding, str) else (
                    m.padding[0] if m.padding[0] == m.padding[1] else f"{m.padding}")
                st = m.stride[0] if m.stride[0] == m.stride[1] else f"{m.stride}"
                lines.append(f"{dims} CONV{weight_layers}: {m.out_channels} {kh}x{kw} "
                             f"filters at stride {st}, pad {pad}")
            elif t == "Linear" and m is not None:
                weight_layers += 1
                fc_seen += 1
                tail = " (class scores)" if fc_seen == n_fc else ""
                lines.append(f"{dims} FC{weight_layers}: {m.out_features} neurons{tail}")
            else:
                kind, what = _LISTING_KINDS.get(t, (t.upper(), ""))
                counts[kind] = counts.get(kind, 0) + 1
                ks = getattr(m, "kernel_size", None)
                if isinstance(ks, tuple):
                    st = m.stride[0] if m.stride[0] == m.stride[1] else f"{m.stride}"
                    what = f"{ks[0]}x{ks[1]} filters at stride {st}"
                    pad = getattr(m, "padding", (0, 0))
                    if pad != (0, 0):
                        what += f", pad {pad[0] if pad[0] == pad[1] else pad}"
                lines.append(f"{dims} {kind}{counts[kind]}: {what}".rstrip(": "))
        return lines

    def __repr__(self):
        return (f"Summary({len(self.rows)} rows, params={self.total_params:,}, "
                f"MACs={self.total_macs:,})")


def summary(model, input_shape, dtype=None, style="table"):
    """Per-layer output shapes, activations, parameters and MACs of ``model``.

    Parameters
    ----------
    model : convcore.nn.Module
    input_shape : tuple
        ``(C, H, W)`` (a batch of one) or ``(N, C, H, W)``.
    dtype : dtype, optional
        Element type for activation bytes (default: the model's parameters').
    style : {'table', 'notes', 'listing'}
        What ``str()`` of the result prints: the per-layer table (default);
        the notes' VGG-16 form (``CONV3-64: [224x224x64] memory:
        224*224*64=3.2M params: (3*3*3)*64 = 1,728``, then the totals); or
        the notes' AlexNet form (``[55x55x96] CONV1: 96 11x11 filters at
        stride 4, pad 0``).  Every form is available from any result through
        :meth:`Summary.notes` and :meth:`Summary.listing`.

    Returns
    -------
    Summary
        ``.rows`` (list of dicts), totals, and a printable table.

    Notes
    -----
    Activations are the elements of each layer's output (the notes' "memory");
    ``weights`` counts parameters without biases (the notes' "params");
    MACs are the multiply-accumulates of convolutions and FC layers.
    The notes' forms leave out the layers the notes do not list (ReLU,
    dropout, flatten, adaptive pools that keep the shape); their totals are
    over the listed lines.

    Examples
    --------
    >>> import convcore as cc
    >>> s = cc.summary(cc.models.vgg16(rng=0), (3, 224, 224))
    >>> r = s.rows[1]
    >>> r["output_shape"], r["activations"], r["weights"]
    ((1, 64, 224, 224), 3211264, 1728)
    >>> print(s.notes()[1])
    CONV3-64: [224x224x64] memory: 224*224*64=3.2M params: (3*3*3)*64 = 1,728
    >>> print(cc.summary(cc.models.alexnet(rng=0), (3, 227, 227)).listing()[1])
    [55x55x96] CONV1: 96 11x11 filters at stride 4, pad 0
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
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
    layers = dict(model.named_modules()) if hasattr(model, "named_modules") else {}
    return Summary(rows, shape, itemsize, style, layers)
