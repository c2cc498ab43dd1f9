"""Local Sphinx directives: benchmark snapshots and sections that need a feature.

``.. bench-machine:: _data/conv.json`` prints the machine and versions a snapshot
was measured with; ``.. bench-table:: _data/conv.json`` its results as a table.
Paths are relative to the documentation source directory. The tables are built
from the JSON at build time, so they always show exactly what was measured.

``.. requires:: convcore.nn`` renders its content (examples, doctests, plots)
only when that module or attribute can be imported; otherwise it shows a short
"pending" note in its place, so the prose around it stays and no example that
cannot run is left in the pages or in the doctest run.
"""
from __future__ import annotations

import importlib
import json
import os

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _load(directive, rel):
    path = os.path.join(directive.env.srcdir, rel)
    directive.env.note_dependency(path)
    with open(path) as fh:
        return json.load(fh)


def _fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _list_table(header, rows, widths=None):
    lines = [".. list-table::", "   :header-rows: 1", ""]
    if widths:
        lines[2:2] = [f"   :widths: {' '.join(map(str, widths))}"]
    for row in [header] + rows:
        first = True
        for cell in row:
            lines.append(("   * - " if first else "     - ") + (str(cell) or " "))
            first = False
    return lines


def _machine_rows(data):
    """(key, value) pairs describing where and with what a snapshot was measured."""
    out = []
    env = data.get("environment") or {}
    mach = data.get("machine") or {}
    vers = data.get("versions") or {}
    cpu = env.get("cpu_model") or mach.get("cpu") or mach.get("cpu_model")
    if cpu:
        out.append(("CPU", cpu))
    cpus = env.get("cpus") or mach.get("cpus")
    if cpus:
        out.append(("logical CPUs", cpus))
    if mach.get("platform"):
        out.append(("platform", mach["platform"]))
    if env.get("machine"):
        out.append(("architecture", env["machine"]))
    if mach.get("gpu"):
        out.append(("GPU", mach["gpu"]))
    threads = env.get("threads", data.get("threads"))
    if threads is not None:
        out.append(("threads", threads))
    for name in ("convcore", "python", "numpy", "torch", "cupy"):
        v = env.get(name, vers.get(name))
        if v:
            out.append((name, v))
    blas = env.get("blas_convcore")
    if blas:
        out.append(("convcore's BLAS (kernel)",
                    "; ".join(f"``{part.strip()}``" for part in blas.split(";"))))
    forced = env.get("blas_environment")
    if forced:
        out.append(("OpenBLAS overrides in the environment",
                    ", ".join(f"``{k}={v}``" for k, v in forced.items())))
    elif "blas_environment" in env:
        out.append(("OpenBLAS overrides in the environment",
                    "none (OpenBLAS picks its kernels for the CPU)"))
    lim = data.get("limits") or {}
    if "sgemm_2048_gflops" in lim:
        out.append(("sgemm 2048³ (NumPy's BLAS)", f"{lim['sgemm_2048_gflops']:.0f} GFLOP/s"))
    copy = lim.get("copy_gbs", data.get("copy_gbs"))
    if copy:
        out.append(("np.copyto bandwidth", f"{copy:.1f} GB/s"))
    when = data.get("measured_at") or data.get("time")
    if when:
        out.append(("measured", when))
    if data.get("data"):
        out.append(("data", f"{data['data']}, {data.get('images', '?')} images per epoch"
                    if data.get("images") else data["data"]))
    if data.get("rounds"):
        out.append(("protocol", "each library alone in its own fresh process, alternating, "
                    f"{data['rounds']} rounds of {data.get('reps', '?')} repetitions (median), "
                    "library defaults"))
    elif data.get("reps"):
        out.append(("interleaved repetitions", data["reps"]))
    q = data.get("quiet_check") or {}
    if q.get("busy_fraction") is not None:
        out.append(("machine before the run", f"{100 * q['busy_fraction']:.0f}% busy"
                    + (" (measured anyway with --force)" if q.get("forced") else "")))
    if data.get("smoke"):
        out.append(("status", f"**{data['smoke']}**"))
    return out


def _conv_table(data):
    header = ["layer", "shape N,C,H,W → K, k/s/p", "pass", "convcore ms", "GFLOP/s",
              "PyTorch ms", "GFLOP/s ", "PyTorch / convcore", "NumPy / convcore"]
    rows = []
    for r in data["layers"]:
        s = r.get("shape", [])
        shape = (f"{s[0]},{s[1]},{s[2]},{s[3]} → {s[4]}, {s[5]}/{s[6]}/{s[7]}"
                 + (f" g{s[8]}" if len(s) > 8 and s[8] != 1 else "")) if len(s) >= 8 else ""
        cc, th, npy = r.get("convcore", {}), r.get("torch") or {}, r.get("numpy") or {}
        rows.append([f"``{r['layer']}``", shape, r.get("pass", ""),
                     _fmt(cc.get("median_s", float("nan")) * 1e3),
                     _fmt(cc.get("gflops"), 1),
                     _fmt(th["median_s"] * 1e3) if "median_s" in th else "–",
                     _fmt(th.get("gflops"), 1),
                     _fmt(th.get("ratio_vs_convcore")),
                     _fmt(npy.get("ratio_vs_convcore"))])
    return header, rows


def _pool_table(data):
    header = ["case", "shape", "pass", "convcore ms", "GB/s", "PyTorch ms", "GB/s ",
              "PyTorch / convcore"]
    rows = []
    for r in data["cases"]:
        rows.append([r["case"], "×".join(map(str, r.get("shape", []))), r.get("mode", ""),
                     _fmt(r.get("convcore_ms")), _fmt(r.get("convcore_gbs")),
                     _fmt(r.get("torch_ms")), _fmt(r.get("torch_gbs")),
                     _fmt(r.get("ratio"))])
    return header, rows


def _train_table(data):
    header = ["implementation", "epoch time s (median)", "images/s", "peer / convcore (median of per-epoch ratios)"]
    rows = []
    for name, r in data["results"].items():
        rows.append([{"convcore": "convcore", "torch": "PyTorch CPU"}.get(name, name),
                     _fmt(r.get("median_s")), _fmt(r.get("images_per_s"), 0),
                     _fmt(r.get("ratio_vs_convcore")) if name != "convcore" else "1.00"])
    return header, rows


def _ms(v, scale=1e3, digits=2):
    return _fmt(v * scale, digits) if isinstance(v, (int, float)) else "–"


def _layers_table(data, net):
    """One network of bench_layers.py: a row per (distinct layer, batch)."""
    header = ["layer (C×H×W → K, kernel/stride, pad)", "N", "uses", "fwd ms",
              "PyTorch / convcore", "fwd+bwd ms", "GFLOP/s", "PyTorch / convcore ",
              "time(N) / time(N/8)"]
    rows_in = data["networks"][net]["rows"]
    strategies = any(e.get("strategy") for e in rows_in)
    if strategies:          # snapshots taken before the benchmark reported it lack it
        header.append("strategy fwd / bwd")
    rows = []
    for e in rows_in:
        f, fb = e["fwd"], e["fwd+bwd"]
        sc = fb.get("scale_8_over_1", fb.get("scale_64_over_8"))
        rows.append([f"``{e['layer']}``", e["N"], e["count"],
                     _ms(f.get("convcore", {}).get("median_s")),
                     _fmt(f.get("torch", {}).get("ratio_vs_convcore")),
                     _ms(fb.get("convcore", {}).get("median_s")),
                     _fmt(fb.get("convcore", {}).get("gflops"), 1),
                     _fmt(fb.get("torch", {}).get("ratio_vs_convcore")),
                     (_fmt(sc) + (" ⚠" if sc > 8.5 else "")) if isinstance(sc, float) else "–"])
        if strategies:
            st = e.get("strategy")
            rows[-1].append("–" if not st else st["fwd"] if st["fwd"] == st["bwd"]
                            else f"{st['fwd']} / {st['bwd']}")
    return header, rows


def _layers_summary(data, net):
    s = data["networks"][net]["summary"]
    parts = []
    for p, label in (("fwd", "forward"), ("fwd+bwd", "forward + backward")):
        g = s.get(p) or {}
        if g.get("geomean_torch_over_convcore"):
            worst = ", ".join(f"``{w['layer']}`` at N={w['N']} ({w['ratio']:.2f})"
                              for w in g["worst"])
            parts.append(f"{label}: geometric mean {g['geomean_torch_over_convcore']:.2f}, "
                         f"{g['below_1']} below 1.0, worst {worst}")
    out = ["PyTorch / convcore per network — " + "; ".join(parts) + "."] if parts else []
    if s.get("scaling_flags"):
        out.append("Time growing more than 8.5× for 8× the batch (⚠): " + ", ".join(
            f"``{x['layer']}`` N={x['N']} {x['pass']} ({x['scale']:.1f})"
            for x in s["scaling_flags"]) + ".")
    return out


def _nets_table(data):
    header = ["network", "case", "convcore ms", "PyTorch ms", "PyTorch / convcore",
              "fastest rounds", "ONNX Runtime ms", "ONNX Runtime / convcore"]
    rows = []
    ort = data.get("onnxruntime", "installed")
    for net, d in data["networks"].items():
        if not (d.get("check") or {}).get("ok"):
            rows.append([net, "refused: float64 check failed", "", "", "", "", "", ""])
            continue
        for case, r in d.get("cases", {}).items():
            o = r.get("onnxruntime") or {}
            missing = "–" if case.startswith("train") or ort == "installed" else ort
            rows.append([net, case.replace("train", "training step").replace(
                "infer", "inference"), _ms(r.get("convcore", {}).get("median_s")),
                _ms(r.get("torch", {}).get("median_s")),
                _fmt(r.get("torch", {}).get("ratio_vs_convcore")),
                _fmt(r.get("torch", {}).get("ratio_best_rounds")),
                _ms(o.get("median_s")) if o else missing,
                _fmt(o.get("ratio_vs_convcore")) if o else missing])
    return header, rows


def _nets_memory_table(data):
    header = ["network", "convcore MiB", "PyTorch MiB", "PyTorch / convcore"]
    rows = []
    for net, d in data["networks"].items():
        m = d.get("memory") or {}
        c, t = m.get("convcore"), m.get("torch")
        if c and t:
            rows.append([net, _fmt(c / 2**20, 1), _fmt(t / 2**20, 1), _fmt(t / c)])
    return header, rows


def _overhead_table(data):
    header = ["call", "convcore µs", "PyTorch µs", "PyTorch / convcore"]
    return header, [[f"``{r['case']}``", _fmt(r.get("convcore_us"), 1),
                     _fmt(r.get("torch_us"), 1), _fmt(r.get("ratio"))] for r in data["cases"]]


def _norm_table(data):
    header = ["op", "pass", "networks", "convcore ms", "1 thread ms", "NumPy path ms",
              "PyTorch ms", "PyTorch / convcore"]
    return header, [[f"``{r['case']}``", r["pass"], ", ".join(r.get("networks") or []) or
                     "(fixed)", _fmt(r.get("convcore_ms"), 3),
                     _fmt(r.get("convcore_1thread_ms"), 3), _fmt(r.get("numpy_ms"), 3),
                     _fmt(r.get("torch_ms"), 3), _fmt(r.get("torch_over_convcore"))]
                    for r in data["cases"]]


def _generic_table(data):
    """Any list of flat records: one column per scalar key."""
    for key in ("rows", "results", "cases", "layers", "runs"):
        recs = data.get(key)
        if isinstance(recs, list) and recs and isinstance(recs[0], dict):
            break
    else:
        return ["key", "value"], [[k, _fmt(v)] for k, v in data.items()
                                  if not isinstance(v, (dict, list))]
    cols = [k for k, v in recs[0].items() if not isinstance(v, (dict, list))]
    return cols, [[_fmt(r.get(c)) for c in cols] for r in recs]


def available(spec: str) -> bool:
    """Whether ``spec`` (a module, or a module attribute such as
    ``convcore.max_pool2d``) can be imported."""
    try:
        importlib.import_module(spec)
        return True
    except ImportError:
        pass
    mod, _, attr = spec.rpartition(".")
    if not mod:
        return False
    try:
        return hasattr(importlib.import_module(mod), attr)
    except ImportError:
        return False


class Requires(SphinxDirective):
    required_arguments = 1
    optional_arguments = 8
    has_content = True

    def run(self):
        # What this page shows depends on the code, not on the page's source:
        # remember it, so that every build reads the page again.
        if not hasattr(self.env, "cc_requires_docs"):
            self.env.cc_requires_docs = set()
        self.env.cc_requires_docs.add(self.env.docname)
        missing = [a for a in self.arguments if not available(a)]
        node = nodes.container()
        if missing:
            names = ", ".join(f"``{m}``" for m in missing)
            text = [".. note::", "",
                    f"   **Pending.** The examples of this section use {names}, which this",
                    "   build of convcore does not provide yet; they appear here, and run",
                    "   as doctests, once it does."]
            self.state.nested_parse(StringList(text, source=self.get_source_info()[0]),
                                    self.content_offset, node)
        else:
            self.state.nested_parse(self.content, self.content_offset, node)
        return node.children


class _BenchDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def _render(self, lines):
        node = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.arguments[0]),
                                self.content_offset, node)
        return node.children


class BenchMachine(_BenchDirective):
    def run(self):
        data = _load(self, self.arguments[0])
        rows = [[k, v] for k, v in _machine_rows(data)]
        return self._render(_list_table(["", "measured on"], rows, widths=[1, 3]))


class BenchTable(_BenchDirective):
    """``.. bench-table:: _data/x.json``; for bench_layers.py snapshots
    ``:network: resnet18`` picks the network, for bench_nets.py ``:part: memory``
    the memory table."""
    option_spec = {"network": lambda a: a.strip(), "part": lambda a: a.strip()}

    def run(self):
        data = _load(self, self.arguments[0])
        kind = data.get("benchmark")
        net = self.options.get("network")
        if kind == "layers":
            if net not in data.get("networks", {}):
                return self._render([f"*No layers of {net} in this snapshot* "
                                     "(run ``bench_layers.py`` with it to fill this table)."])
            header, rows = _layers_table(data, net)
            return self._render(_list_table(header, rows) + [""] + _layers_summary(data, net))
        if kind == "nets":
            header, rows = (_nets_memory_table(data) if self.options.get("part") == "memory"
                            else _nets_table(data))
            return self._render(_list_table(header, rows))
        if kind == "overhead":
            return self._render(_list_table(*_overhead_table(data)))
        if kind == "norm":
            return self._render(_list_table(*_norm_table(data)))
        if kind == "conv" and "layers" in data:
            header, rows = _conv_table(data)
        elif kind == "pool" and "cases" in data:
            header, rows = _pool_table(data)
        elif isinstance(data.get("results"), dict) and "convcore" in data["results"]:
            header, rows = _train_table(data)
        else:
            header, rows = _generic_table(data)
        lines = _list_table(header, rows)
        summ = data.get("summary") or {}
        parts = [f"{'forward' if k == 'fwd' else 'forward + backward'} "
                 f"{v['geomean_torch_over_convcore']:.2f} (lowest {v['min_ratio']:.2f})"
                 for k, v in summ.items()
                 if isinstance(v, dict) and v.get("geomean_torch_over_convcore")]
        if parts:
            lines += ["", "Geometric mean of the PyTorch / convcore ratios over the layers: "
                      + "; ".join(parts) + "."]
        return self._render(lines)


def _always_reread(app, env, added, changed, removed):
    return sorted(getattr(env, "cc_requires_docs", set()) - set(removed))


def _purge(app, env, docname):
    getattr(env, "cc_requires_docs", set()).discard(docname)


def _merge(app, env, docnames, other):
    if not hasattr(env, "cc_requires_docs"):
        env.cc_requires_docs = set()
    env.cc_requires_docs |= getattr(other, "cc_requires_docs", set())


def setup(app):
    app.connect("env-get-outdated", _always_reread)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.add_directive("bench-machine", BenchMachine)
    app.add_directive("bench-table", BenchTable)
    app.add_directive("requires", Requires)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
