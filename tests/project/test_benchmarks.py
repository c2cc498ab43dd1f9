"""The benchmark scripts: they import, they find every layer of the networks,
and the runner's process, median and ratio logic is right (on made-up
timings; nothing here times anything)."""
import importlib
import os
import sys
import textwrap

import pytest

from convcore import nn

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "benchmarks")
if not os.path.isdir(BENCH):   # tests copied next to an installed wheel
    pytest.skip("the benchmarks/ folder of a source tree is not here",
                allow_module_level=True)
sys.path.insert(0, BENCH)

import _nets  # noqa: E402
import _runner  # noqa: E402

SCRIPTS = ["bench_conv", "bench_pool", "bench_norm", "bench_train", "bench_layers",
           "bench_nets", "bench_overhead", "bench_gpu", "bench_distributed",
           "_convcases", "_opcases"]

# Convolutions per network, counted from the architectures' definitions:
# LeNet-5 2; AlexNet 5; VGG-11 8 and VGG-16 13 (the configuration table);
# GoogLeNet 3 in the stem + 6 in each of 9 Inception modules; ResNet-18
# 1 + 2 per block x 8 + 3 projections; ResNet-34 1 + 2 x 16 + 3;
# ResNet-50 1 + 3 per block x 16 + 4 projections.
CONVS = {"lenet5": 2, "alexnet": 5, "vgg11": 8, "vgg16": 13, "googlenet": 57,
         "resnet18": 20, "resnet34": 36, "resnet50": 53}


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_module_imports_without_running(name):
    mod = importlib.import_module(name)
    assert mod.__doc__


def test_twins_import_with_torch():
    pytest.importorskip("torch")
    twins = importlib.import_module("_twins")
    assert callable(twins.resnet50)


@pytest.mark.parametrize("net", list(_nets.NETWORKS))
def test_every_conv2d_of_the_network_is_enumerated_once(net):
    model = _nets.build(net)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    rows = _nets.conv_layers(net, model)
    names = [n for r in rows for n in r["names"]]
    assert sorted(names) == sorted(convs)
    assert sum(r["count"] for r in rows) == len(convs) == CONVS[net.split("-")[0]]
    keys = [(r["C"], r["H"], r["W"], r["K"], tuple(r["kernel"]), tuple(r["stride"]),
             str(r["padding"]), r["groups"], r["bias"]) for r in rows]
    assert len(set(keys)) == len(keys)


def test_enumerated_shapes_follow_the_networks():
    labels = {n: {_nets.layer_label(r) for r in _nets.conv_layers(n)}
              for n in ("alexnet", "vgg16", "googlenet", "resnet18", "resnet18-32")}
    # AlexNet's second layer sees 96 maps of 27x27 (after 11x11/4 and a 3x3/2 pool)
    assert "96x27x27->256 5x5/1 p2" in labels["alexnet"]
    # VGG-16's blocks run at 224, 112, 56, 28 and 14
    assert {"3x224x224->64 3x3/1 p1", "512x14x14->512 3x3/1 p1"} <= labels["vgg16"]
    assert len(labels["vgg16"]) == 9
    # GoogLeNet's inception (4b) 5x5 branch: 24 -> 64 on 14x14
    assert "24x14x14->64 5x5/1 p2" in labels["googlenet"]
    # ResNet-18: the stride-2 entries; on 32x32 input layer4 works on 1x1 maps
    assert "64x56x56->128 3x3/2 p1" in labels["resnet18"]
    assert "512x1x1->512 3x3/1 p1" in labels["resnet18-32"]
    assert "256x2x2->256 3x3/1 p1" in labels["resnet18-32"]


def test_trace_leaves_the_model_unchanged():
    model = _nets.build("resnet18-32")
    _nets.trace(model, (1, 3, 32, 32))
    assert all("_summary" not in m.__dict__ for m in model.modules())


def test_other_ops_come_from_the_networks():
    ops = {n: _nets.other_ops(n) for n in ("alexnet", "googlenet", "resnet18", "lenet5")}
    kinds = {n: {r["op"] for r in rows} for n, rows in ops.items()}
    assert {"lrn", "max_pool", "relu", "linear", "cross_entropy"} <= kinds["alexnet"]
    assert {"concat", "lrn", "max_pool", "adaptive_avg_pool"} <= kinds["googlenet"]
    assert {"residual_add", "adaptive_avg_pool"} <= kinds["resnet18"]
    concat = [r for r in ops["googlenet"] if r["op"] == "concat"]
    assert sum(r["count"] for r in concat) == 9
    assert [64, 128, 32, 32] in [r["params"]["splits"] for r in concat]   # inception (3a)
    adds = [r for r in ops["resnet18"] if r["op"] == "residual_add"]
    assert sum(r["count"] for r in adds) == 8
    pools = [r for r in ops["alexnet"] if r["op"] == "max_pool"]
    assert [1, 96, 55, 55] in [r["shape"] for r in pools]
    ce = [r for r in ops["lenet5"] if r["op"] == "cross_entropy"]
    assert ce[0]["shape"] == [1, 10]
    # LeNet-5's adaptive pool to 5x5 is the identity on 28x28 input: no kernel runs
    assert "adaptive_avg_pool" not in kinds["lenet5"]


def _rounds(cc, torch):
    return {"convcore": [{"a": {"median_s": t}} for t in cc],
            "torch": [{"a": {"median_s": t}} for t in torch]}


def test_combine_takes_medians_and_per_round_ratios():
    out = _runner.combine(_rounds([1.0, 2.0, 3.0], [2.0, 2.0, 9.0]))["a"]
    assert out["convcore"]["median_s"] == 2.0
    assert out["torch"]["median_s"] == 2.0
    # per round 2.0, 1.0, 3.0: the median of the ratios, not the ratio of the medians
    assert out["torch"]["ratio_vs_convcore"] == 2.0
    assert out["torch"]["rounds_s"] == [2.0, 2.0, 9.0]
    # beside it: the fastest rounds' ratio (2.0 / 1.0) and each side's spread
    assert out["torch"]["ratio_best_rounds"] == 2.0
    assert out["convcore"]["spread"] == 3.0 and out["torch"]["spread"] == 4.5


def test_best_round_ratio_ignores_a_round_in_a_slow_period():
    # convcore's second round and torch's third fell in slow periods (1.5x)
    out = _runner.combine(_rounds([1.0, 1.5, 1.0], [1.2, 1.2, 1.8]))["a"]
    assert out["torch"]["ratio_best_rounds"] == pytest.approx(1.2)
    assert out["torch"]["ratio_vs_convcore"] == pytest.approx(1.2)
    # two of convcore's three rounds slow: the median of the ratios (0.8,
    # 0.8, 1.2) follows the slow period, the best rounds do not
    out = _runner.combine(_rounds([1.5, 1.5, 1.0], [1.2, 1.2, 1.2]))["a"]
    assert out["torch"]["ratio_vs_convcore"] == pytest.approx(0.8)
    assert out["torch"]["ratio_best_rounds"] == pytest.approx(1.2)
    assert out["convcore"]["spread"] == pytest.approx(1.5)


def test_combine_skips_missing_cases_and_private_keys():
    per = {"convcore": [{"a": {"median_s": 1.0}, "_versions": {"convcore": "x"}},
                        {"a": {"median_s": 3.0}}],
           "torch": [{"a": {"median_s": 4.0}}, {"b": {"median_s": 1.0}}]}
    out = _runner.combine(per)
    assert set(out) == {"a", "b"}
    assert out["a"]["torch"]["ratio_vs_convcore"] == 4.0   # round 2 has no torch time
    assert "ratio_vs_convcore" not in out["b"]["torch"]    # no convcore time to compare
    assert _runner.versions_of(per) == {"convcore": "x"}


def test_geomean():
    assert _runner.geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert _runner.geomean([None, 2.0, 0.0]) == pytest.approx(2.0)
    assert _runner.geomean([]) is None


def test_measure_takes_the_median_of_repetitions(monkeypatch):
    clock = {"t": 0.0}
    steps = iter([0.5, 0.5, 0.1, 0.3, 0.2, 9.0, 0.25])   # 2 warm-ups, then 5 timed

    def fn():
        clock["t"] += next(steps)
    monkeypatch.setattr(_runner.time, "perf_counter", lambda: clock["t"])
    r = _runner.measure(fn, reps=5, warmup=2, min_time=0.01)
    assert r["calls_per_sample"] == 1
    assert r["median_s"] == pytest.approx(0.25)
    assert len(r["times_s"]) == 5


def test_child_environment_drops_only_tuning_variables():
    env = _runner.child_env({"OMP_NUM_THREADS": "1", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0",
                             "CONVCORE_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                             "PYTHONPATH": "/x", "PATH": "/bin"})
    assert env == {"OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": "/x", "PATH": "/bin"}


def test_forced_openblas_kernels_are_reported_not_changed(monkeypatch, capsys):
    """OPENBLAS_CORETYPE slows convcore's GEMMs only: the parent says so and
    records it, and the children still inherit it (the user's setting)."""
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512", "OPENBLAS_NUM_THREADS": "1"}
    assert _runner.blas_environment(env) == {"OPENBLAS_CORETYPE": "Haswell",
                                             "OPENBLAS_L2_SIZE": "512"}
    assert _runner.child_env(env) == env
    monkeypatch.setattr(_runner, "busy_fraction", lambda seconds: 0.0)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    info = _runner.check_quiet()
    assert info["blas_environment"]["OPENBLAS_CORETYPE"] == "Haswell"
    assert "OPENBLAS_CORETYPE=Haswell" in capsys.readouterr().err
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert "blas_environment" not in _runner.check_quiet()
    assert "OPENBLAS_CORETYPE" not in capsys.readouterr().err


def test_busy_machine_is_refused_unless_forced(monkeypatch, capsys):
    monkeypatch.setattr(_runner, "busy_fraction", lambda seconds: 0.9)
    with pytest.raises(SystemExit, match="--force"):
        _runner.check_quiet(force=False)
    info = _runner.check_quiet(force=True)
    assert info["forced"] and not info["quiet"]
    assert "NOT QUIET" in capsys.readouterr().err
    monkeypatch.setattr(_runner, "busy_fraction", lambda seconds: 0.01)
    assert _runner.check_quiet(force=False)["quiet"]


def test_sides_alternate_in_fresh_processes_without_tuning_variables(tmp_path, monkeypatch):
    script = tmp_path / "fake_bench.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {BENCH!r})
        import _runner

        def side(payload):
            mods = sorted(m for m in ("convcore", "torch") if m in sys.modules)
            return {{"a": {{"median_s": payload["t"]}}, "pid": os.getpid(), "mods": mods,
                    "env": sorted(k for k in os.environ if k.startswith(("OMP_", "CONVCORE_")))}}
        _runner.child_main({{"convcore": side, "torch": side}})
    """))
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    monkeypatch.setenv("CONVCORE_STRATEGY", "1")
    order = []
    out = _runner.alternate(str(script), ["convcore", "torch"],
                            lambda side: {"t": 1.0 if side == "convcore" else 3.0},
                            rounds=2, log=order.append)
    assert [line.split()[2] for line in order] == ["convcore", "torch", "convcore", "torch"]
    pids = {r["pid"] for rs in out.values() for r in rs}
    assert len(pids) == 4
    assert all(r["env"] == [] and r["mods"] == [] for rs in out.values() for r in rs)
    assert _runner.combine(out)["a"]["torch"]["ratio_vs_convcore"] == 3.0


def test_layer_summary_computes_scaling_and_flags():
    import bench_layers
    layers = {"net": [{"C": 3, "H": 8, "W": 8, "K": 4, "kernel": [3, 3], "stride": [1, 1],
                       "padding": [1, 1], "dilation": [1, 1], "groups": 1, "bias": True,
                       "out": [8, 8], "names": ["c1"], "count": 1}]}
    cases, per_net = bench_layers.plan(layers, lambda net: (1, 8, 64))
    assert len(cases) == 3
    lid = per_net["net"][0]["layer"]
    times = {1: 1.0, 8: 9.0, 64: 40.0}
    timed = {f"{lid} N{n}|{p}": {"convcore": {"median_s": t},
                                 "torch": {"median_s": 2 * t, "ratio_vs_convcore": 2.0}}
             for n, t in times.items() for p in ("fwd", "fwd+bwd")}
    res = bench_layers.summarise(per_net, timed, lambda net: (1, 8, 64), lambda cid: 1e9)
    rows = {r["N"]: r for r in res["net"]["rows"]}
    assert rows[8]["fwd"]["scale_8_over_1"] == 9.0
    assert rows[64]["fwd"]["scale_64_over_8"] == pytest.approx(40 / 9)
    flags = res["net"]["summary"]["scaling_flags"]
    assert {(f["N"], f["pass"]) for f in flags} == {(8, "fwd"), (8, "fwd+bwd")}
    assert res["net"]["summary"]["fwd"]["geomean_torch_over_convcore"] == pytest.approx(2.0)


def test_layer_benchmark_reports_the_strategy_that_runs():
    import _convcases
    import bench_layers

    def case(N, C, H, K, k, s, p, groups=1):
        return dict(id="c", N=N, C=C, H=H, W=H, K=K, kernel=k, stride=s, padding=p,
                    dilation=1, groups=groups, bias=False)
    # on a 1x1 map a padded 3x3 kernel meets data with its centre tap only:
    # cropped, or (from 16 channels) the layer's matrix of centre taps
    st = _convcases.strategies(case(32, 8, 1, 16, 3, 1, 1))
    assert st["fwd"].endswith("+crop") and st["bwd"].endswith("+crop")
    assert _convcases.strategies(case(32, 512, 1, 512, 3, 1, 1)) == {"fwd": "unrolled",
                                                                     "bwd": "unrolled"}
    assert not _convcases.strategies(case(8, 64, 56, 64, 3, 1, 1))["fwd"].endswith("+crop")
    assert _convcases.strategies(case(8, 32, 28, 32, 3, 1, 1, groups=32))["fwd"] == "depthwise"
    assert _convcases.strategies(dict(case(1, 3, 8, 4, 2, 1, 0), padding="same")) is None
    layers = {"net": [{"C": 3, "H": 8, "W": 8, "K": 4, "kernel": [3, 3], "stride": [1, 1],
                       "padding": [1, 1], "dilation": [1, 1], "groups": 1, "bias": True,
                       "out": [8, 8], "names": ["c1"], "count": 1}]}
    cases, per_net = bench_layers.plan(layers, lambda net: (1,))
    cid = cases[0]["id"]
    rounds = {"convcore": [{"_strategy": {cid: {"fwd": "direct", "bwd": "batched"}}}]}
    res = bench_layers.summarise(per_net, {}, lambda net: (1,), lambda c: 1e9,
                                 bench_layers._strategies(rounds))
    row = res["net"]["rows"][0]
    assert row["strategy"] == {"fwd": "direct", "bwd": "batched"}
    assert bench_layers._strategy_text(row["strategy"]) == "direct/batched"
