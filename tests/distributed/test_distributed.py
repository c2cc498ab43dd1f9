"""convcore.distributed: sharding, reductions and data-parallel training.

Tests marked ``mpi`` launch real jobs with ``mpiexec`` on this machine (shared
memory / loopback only, bounded by timeouts); they skip with a message when
mpi4py, an MPI library or a launcher is missing.  Install them with
``pip install ".[mpi]"`` and run ``pytest -m mpi``.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import convcore
import convcore.distributed as dist
from distributed import _dist_worker as W

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_dist_worker.py")
JOB_TIMEOUT = 120          # seconds; a hanging job fails the test instead of hanging it


# --------------------------------------------------------------------------
# Without MPI: sharding, single-process behaviour, error messages
# --------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 7, 10, 64])
@pytest.mark.parametrize("w", [1, 2, 3, 4, 5])
def test_shard_bounds_are_disjoint_and_cover_in_rank_order(n, w):
    bounds = [dist.shard_bounds(n, r, w) for r in range(w)]
    covered = [i for a, b in bounds for i in range(a, b)]
    assert covered == list(range(n))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("w", [1, 2, 3, 4])
def test_sharded_batches_rebuild_the_single_process_order(shuffle, drop_last, w):
    n, batch, seed = 23, 6, 11
    for epoch in range(3):
        # Reference: the documented order, written out independently.
        order = (np.random.default_rng([seed, epoch]).permutation(n) if shuffle
                 else np.arange(n))
        nb = n // batch if drop_last else -(-n // batch)
        expected = [order[i * batch:(i + 1) * batch] for i in range(nb)]
        per_rank = []
        for r in range(w):
            sb = dist.ShardedBatches(n, batch, shuffle=shuffle, seed=seed,
                                     drop_last=drop_last, rank=r, world_size=w)
            sb.set_epoch(epoch)
            per_rank.append(list(sb))
            assert len(sb) == nb
        assert all(len(p) == nb for p in per_rank)
        for i in range(nb):
            got = np.concatenate([per_rank[r][i] for r in range(w)])
            np.testing.assert_array_equal(got, expected[i])
        seen = np.concatenate([np.concatenate(p) for p in per_rank if p]) if nb else []
        assert len(set(np.asarray(seen).tolist())) == len(seen)   # no sample twice
        if not drop_last:
            assert sorted(np.asarray(seen).tolist()) == list(range(n))


def test_sharded_batches_epochs_differ_and_resume_skips_batches():
    sb = dist.ShardedBatches(20, 5, seed=0, rank=0, world_size=1)
    e0 = [b.tolist() for b in sb]
    sb.set_epoch(1)
    e1 = [b.tolist() for b in sb]
    assert e0 != e1
    sb.set_epoch(1, start_batch=2)
    assert [b.tolist() for b in sb] == e1[2:]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n=-1, batch_size=2), ValueError, "n must be >= 0"),
    (dict(n=4, batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(n=4, batch_size=2.5), TypeError, "batch_size must be an int"),
    (dict(n=4, batch_size=2, rank=2, world_size=2), ValueError, "rank must be < world_size"),
    (dict(n=4, batch_size=2, rank=0, world_size=0), ValueError, "world_size must be >= 1"),
])
def test_sharded_batches_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        dist.ShardedBatches(**kwargs)


def test_single_process_reductions_are_identities():
    if dist.is_initialized():
        pytest.skip("MPI already initialised in this process")
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.is_main_process()
    ps = [W.Param(np.zeros((2, 3)))]
    ps[0].grad = np.arange(6.0).reshape(2, 3)
    assert dist.allreduce_gradients(ps, local_batch=3) == 3
    np.testing.assert_array_equal(ps[0].grad, np.arange(6.0).reshape(2, 3))
    assert dist.reduce_metrics({"a": 2, "b": 3.5}) == {"a": 2.0, "b": 3.5}
    with pytest.raises(ValueError, match="local_batch must be a finite number >= 0"):
        dist.allreduce_gradients(ps, local_batch=-1)
    with pytest.raises(TypeError, match=r"\.data and \.grad"):
        dist.allreduce_gradients([object()])


def test_init_without_mpi4py_says_what_to_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import convcore.distributed as d\n"
            "try:\n    d.init()\nexcept d.DistributedError as e:\n    print(e)\n")
    out = _run_python(code)
    assert 'pip install "convcore[mpi]"' in out


@pytest.mark.mpi
def test_init_outside_a_launcher_says_how_to_launch():
    pytest.importorskip("mpi4py", reason="needs mpi4py (the mpi extra)")
    code = ("import convcore.distributed as d\n"
            "try:\n    d.init(require_launcher=True)\nexcept d.DistributedError as e:\n    print(e)\n")
    env = {k: v for k, v in os.environ.items() if k not in dist._LAUNCHER_VARS}
    out = _run_python(code, env=env)
    assert "mpiexec -n 2 convcore train --distributed" in out


def test_sync_batch_norm_without_mpi_matches_naive_batch_norm(rng):
    x = rng.standard_normal((6, 3, 4, 5)) * 3 - 1
    dy = rng.standard_normal(x.shape)
    wt, bs = rng.standard_normal(3), rng.standard_normal(3)
    y, mean, var, cache = dist.sync_batch_norm_forward(x, wt, bs, eps=1e-5)
    dx, gw, gb = dist.sync_batch_norm_backward(dy, cache)
    ref = _naive_bn(x, dy, wt, bs, 1e-5)
    for got, exp in zip((y, dx, gw, gb, mean, var), ref):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-12)


def test_convert_sync_batchnorm_in_one_process_is_plain_batch_norm():
    from convcore import nn
    a = W.TinyBNNet(0)                     # the plain BatchNorm: the reference
    b = W.TinyBNNet(0, layer_bn=True)
    assert dist.convert_sync_batchnorm(b) == 1
    assert type(b.bn).__name__ == "SyncBatchNorm2d" and isinstance(b.bn, nn.BatchNorm2d)
    assert dist.convert_sync_batchnorm(W.TinyNet(0)) == 0
    x, y = W.make_data()
    for m in (a, b):
        opt = W.SGD(m.parameters())
        for step in range(3):
            m.zero_grad()
            idx = slice(8 * step, 8 * step + 8)
            _, d = W.loss_and_grad(m.forward(x[idx]), y[idx])
            m.backward(d)
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(q.data, p.data, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b.bn.running_var, a.bn.running_var, rtol=1e-12)


def test_sync_batchnorm_layer_in_one_process_matches_torch_batch_norm(rng):
    torch = pytest.importorskip("torch")
    from convcore import nn
    ours = nn.SyncBatchNorm2d(3, momentum=0.2, dtype=np.float64)
    ours.weight.data[...] = rng.standard_normal(3)
    ours.bias.data[...] = rng.standard_normal(3)
    theirs = torch.nn.BatchNorm2d(3, momentum=0.2, dtype=torch.float64)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    for step in range(2):                                   # training mode
        x = rng.standard_normal((4, 3, 5, 6)) * 2 + 1
        dy = rng.standard_normal(x.shape)
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(ours(x), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.backward(dy), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-9)
    ours_state = ours.state_dict()
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours_state[k], v.numpy(), rtol=1e-12, err_msg=k)
    ours.eval(), theirs.eval()                               # eval: running statistics
    x = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)


def _bn_net(rng=0):
    from convcore import nn
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(3, 3, 1, rng=rng), nn.BatchNorm2d(3)))


def test_convert_sync_batchnorm_swaps_layers_keeping_names_and_parameters():
    from convcore import nn
    net = _bn_net()
    keys, params = list(net.state_dict()), list(net.parameters())
    assert nn.convert_sync_batchnorm(net) == 2
    assert [type(m).__name__ for m in net.modules()].count("SyncBatchNorm2d") == 2
    assert type(net[3][1]) is nn.SyncBatchNorm2d and net[3][1] is net[3]._modules["1"]
    assert list(net.state_dict()) == keys                  # same names, same order
    assert all(p is q for p, q in zip(net.parameters(), params))   # optimisers keep working
    assert nn.convert_sync_batchnorm(net) == 2             # already synchronised: kept
    plain = _bn_net(rng=1)
    plain.load_state_dict(net.state_dict())                # checkpoints load either way
    net.load_state_dict(_bn_net(rng=2).state_dict())
    with pytest.raises(TypeError, match="from_batch_norm"):
        nn.convert_sync_batchnorm(nn.BatchNorm2d(3))


def test_convert_sync_batchnorm_in_eval_mode_matches_torch(rng):
    torch = pytest.importorskip("torch")
    from convcore import nn
    net = _bn_net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[...] = rng.standard_normal(3)
            m.running_var[...] = rng.random(3) + 0.5
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.BatchNorm2d(3),
                                 torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1),
                                                                      torch.nn.BatchNorm2d(3)))
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in net.state_dict().items()})
    theirs.eval()
    net.eval()                        # folds conv + batch norm, naming the old layers
    nn.convert_sync_batchnorm(net)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(net(x), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_sharding_in_the_data_loader_does_not_import_the_runtime():
    code = ("import sys, numpy as np, convcore.data as d\n"
            "from convcore.data.shard import ShardedBatches\n"
            "it = d.BatchIterator(np.zeros((10, 1, 4, 4), np.float32), np.zeros(10, np.int64), 4)\n"
            "n = [len(y) for _, y in it.epoch(0, shard=(1, 2))]\n"
            "m = [len(i) for i in ShardedBatches(10, 4, rank=1, world_size=2)]\n"
            "print(n, m, sorted(k for k in ('convcore.distributed', 'mpi4py') if k in sys.modules))\n")
    assert _run_python(code).strip() == "[2, 2, 1] [2, 2, 1] []"


def _naive_bn(x, dy, wt, bs, eps):
    """Per-channel loops; gradient by the chain rule written out term by term."""
    N, C, H, Wd = x.shape
    m = N * H * Wd
    y = np.empty_like(x)
    dx = np.empty_like(x)
    gw, gb, means, vars_ = np.empty(C), np.empty(C), np.empty(C), np.empty(C)
    for c in range(C):
        v = x[:, c].ravel()
        mu = sum(v) / m
        var = sum((t - mu) ** 2 for t in v) / m
        s = 1 / np.sqrt(var + eps)
        xh = (x[:, c] - mu) * s
        y[:, c] = wt[c] * xh + bs[c]
        g = dy[:, c]
        gb[c], gw[c] = g.sum(), (g * xh).sum()
        # d xhat_i = w g_i ; dvar = sum(dxh (x-mu)) * -1/2 s^3 ; dmu = -s sum(dxh) + dvar*(-2/m) sum(x-mu)
        dxh = wt[c] * g
        dvar = (dxh * (x[:, c] - mu)).sum() * -0.5 * s ** 3
        dmu = -s * dxh.sum() + dvar * -2 * (x[:, c] - mu).sum() / m
        dx[:, c] = dxh * s + dvar * 2 * (x[:, c] - mu) / m + dmu / m
        means[c], vars_[c] = mu, var * m / (m - 1)
    return y, dx, gw, gb, means, vars_


def _run_python(code, env=None):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = _package_parent()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, cwd=HERE)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _package_parent():
    return os.path.dirname(os.path.dirname(os.path.abspath(convcore.__file__)))


# --------------------------------------------------------------------------
# Real MPI jobs
# --------------------------------------------------------------------------

def _mpiexec():
    cand = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(cand, os.X_OK):
        return cand
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _launcher():
    if not dist.is_available():
        pytest.skip('needs mpi4py and an MPI library: pip install "convcore[mpi]"')
    exe = _mpiexec()
    if exe is None:
        pytest.skip('needs an MPI launcher (mpiexec): pip install "convcore[mpi]"')
    version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    extra = []
    if "Open MPI" in version or "OpenRTE" in version:
        extra.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            extra.append("--allow-run-as-root")
    return exe, extra


def _job(n, *args, env_extra=None, timeout=JOB_TIMEOUT, popen=False, cwd=None,
         program=(WORKER,)):
    exe, extra = _launcher()
    env = dict(os.environ)
    env.update(PYTHONPATH=_package_parent() + os.pathsep + HERE, OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", CONVCORE_NUM_THREADS="1")
    env.update(env_extra or {})
    cmd = [exe, *extra, "-n", str(n), sys.executable, *program, *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"mpiexec failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def _reference_training(dtype, batch, steps, cls=W.TinyNet):
    """One process, global batch ``batch``, the documented data order."""
    x, y = W.make_data(dtype=dtype)
    model = cls(0, dtype)
    opt = W.SGD(model.parameters())
    n = len(x)

    def factory(epoch, start):
        order = np.random.default_rng([3, epoch]).permutation(n)
        nb = -(-n // batch)
        return (order[i * batch:(i + 1) * batch] for i in range(start, nb))

    W.train_steps(model, opt, x, y, batch, 0, steps, 3, factory, lambda m, k: None)
    return model, opt, x, y


def _final(out):
    with np.load(os.path.join(out, "final.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 4])
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-4)])
def test_data_parallel_training_matches_single_process(tmp_path, ranks, dtype, rtol):
    # 44 samples in global batches of 6: with 4 ranks the shards hold 2, 2, 1, 1
    # samples and the last batch (2) leaves two ranks with empty shards, so the
    # gradients must be weighted by shard size.
    batch, steps = 6, 16
    _job(ranks, "train", tmp_path, dtype, batch, 0, steps, cwd=tmp_path)
    got = _final(tmp_path)
    model, opt, x, y = _reference_training(np.dtype(dtype), batch, steps)
    for i, p in enumerate(model.parameters()):
        assert got[f"p{i}"].dtype == p.data.dtype
        np.testing.assert_allclose(got[f"p{i}"], p.data, rtol=rtol, atol=rtol * 1e-2)
        # The training moved the weights: the comparison is not vacuous.
        assert not np.allclose(p.data, W.TinyNet(0, np.dtype(dtype)).parameters()[i].data)
    # Sharded evaluation reduced over ranks == evaluation in one process.
    with open(tmp_path / "metrics.json") as fh:
        m = json.load(fh)
    loss, _ = W.loss_and_grad(model.forward(x), y)
    assert m["count"] == len(x)
    assert m["correct"] == (model.forward(x).argmax(axis=1) == y).sum()
    assert m["loss_sum"] == pytest.approx(loss, rel=1e-9 if dtype == "float64" else 1e-4)


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_sync_batch_norm_training_matches_single_process(tmp_path, ranks):
    # With --sync-bn the statistics span the global batch: the same weights and
    # running statistics as BatchNorm in one process, uneven shards included.
    batch, steps = 6, 10
    _job(ranks, "train", tmp_path, "float64", batch, 0, steps, cwd=tmp_path,
         env_extra={"TEST_BN": "sync"})
    got = _final(tmp_path)
    model, _, _, _ = _reference_training(np.dtype("float64"), batch, steps, W.TinyBNNet)
    for i, p in enumerate(model.parameters()):
        np.testing.assert_allclose(got[f"p{i}"], p.data, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got["running_mean"], model.bn.running_mean, rtol=1e-10)
    np.testing.assert_allclose(got["running_var"], model.bn.running_var, rtol=1e-10)


@pytest.mark.mpi
def test_per_rank_batch_norm_differs_from_single_process(tmp_path):
    # The default keeps per-rank statistics: not the single-process result
    # (this is what makes the synchronised option observable).
    batch, steps = 6, 10
    _job(2, "train", tmp_path, "float64", batch, 0, steps, cwd=tmp_path,
         env_extra={"TEST_BN": "local"})
    got = _final(tmp_path)
    model, _, _, _ = _reference_training(np.dtype("float64"), batch, steps, W.TinyBNNet)
    assert not np.allclose(got["p0"], model.parameters()[0].data, rtol=1e-6)


@pytest.mark.mpi
def test_resume_after_stop_equals_uninterrupted_run(tmp_path):
    batch, steps, stop = 8, 14, 8          # stop in the middle of the second epoch
    full, part = tmp_path / "full", tmp_path / "part"
    full.mkdir(), part.mkdir()
    _job(2, "resume", full, "float64", batch, 0, steps, cwd=full)
    _job(2, "resume", part, "float64", batch, 0, stop, cwd=part)
    ckpt = part / "ckpt.npz"
    os.replace(part / "final.npz", ckpt)
    _job(2, "resume", part, "float64", batch, stop, steps, ckpt, cwd=part)
    a, b = _final(full), _final(part)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_sync_batch_norm_matches_batch_norm_over_the_global_batch(tmp_path, ranks):
    _job(ranks, "syncbn", tmp_path, cwd=tmp_path)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 3, 4, 5)) * 2 + 1
    dy = rng.standard_normal(x.shape)
    wt, bs = rng.standard_normal(3), rng.standard_normal(3)
    y, dx, gw, gb, mean, var = _naive_bn(x, dy, wt, bs, 1e-5)
    with np.load(tmp_path / "syncbn.npz") as f:
        for name, exp in [("y", y), ("dx", dx), ("gw", gw), ("gb", gb),
                          ("mean", mean), ("var", var)]:
            np.testing.assert_allclose(f[name], exp, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.mpi
def test_broadcast_and_average_model_state(tmp_path):
    ranks = 3
    _job(ranks, "state", tmp_path, cwd=tmp_path)
    with open(tmp_path / "state.json") as fh:
        res = json.load(fh)
    assert len(res) == ranks
    for r in res:
        assert r["averaged"] == [2.0, 2.0]             # mean of 1, 2, 3
        assert r["p"] == [1.0, 1.0, 1.0]               # rank 0's parameters ...
        assert r["rm"] == [1.0, 1.0]                   # ... and buffers
        assert r["steps"] == 10
        assert r["a"] == [0.0, 1.0, 2.0]
        assert r["lr_ndim"] == 0 and r["lr"] == 0.5 and r["meta"] == "text"


def _wait_for(path, proc, limit=60):
    t0 = time.monotonic()
    while not os.path.exists(path) or not open(path).read().strip():
        if proc.poll() is not None:
            pytest.fail(f"job ended before starting:\n{proc.stdout.read()}")
        if time.monotonic() - t0 > limit:
            _kill_job(proc)
            pytest.fail("job did not start")
        time.sleep(0.1)
    time.sleep(0.5)   # let the ranks enter their allreduce loop
    return int(open(path).read())


def _kill_job(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _finish(proc):
    try:
        out, _ = proc.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_job(proc)
        proc.communicate()
        pytest.fail("the job hung after a rank failed")
    return proc.returncode, out


@pytest.mark.mpi
def test_killed_rank_fails_the_job_without_hanging(tmp_path):
    proc = _job(2, "kill", tmp_path, popen=True, cwd=tmp_path)
    pid = _wait_for(tmp_path / "pid1", proc)
    os.kill(pid, signal.SIGKILL)
    rc, out = _finish(proc)
    assert rc != 0, out
    assert "signal 9" in out.lower() or "killed" in out.lower() or "exited" in out.lower(), out


@pytest.mark.mpi
def test_stopped_rank_trips_the_watchdog_with_a_clear_message(tmp_path):
    proc = _job(2, "stop", tmp_path, popen=True, cwd=tmp_path,
                env_extra={"CONVCORE_DIST_TIMEOUT": "3"})
    pid = _wait_for(tmp_path / "pid1", proc)
    os.kill(pid, signal.SIGSTOP)
    try:
        rc, out = _finish(proc)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert rc != 0, out
    assert "waited more than 3 s in allreduce_gradients" in out, out
    assert "a rank has died, hung" in out


@pytest.mark.mpi
def test_exception_on_one_rank_aborts_every_rank(tmp_path):
    proc = _job(2, "raise", tmp_path, popen=True, cwd=tmp_path)
    rc, out = _finish(proc)
    assert rc != 0, out
    assert "deliberate failure on rank 1" in out
    assert "rank 1 of 2 raised ValueError; aborting every rank" in out


# --------------------------------------------------------------------------
# convcore train --distributed
# --------------------------------------------------------------------------

CLI = ("-m", "convcore.cli")


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    import _synthetic
    d = tmp_path_factory.mktemp("mnist")
    return str(_synthetic.write_idx_dataset(str(d), n_train=120, n_test=37, size=8))


def _train_args(data, out, *extra):
    # A model without Dropout: dropout masks are drawn per rank (documented).
    return ["train", "--model", "_dist_worker:plain_net", "--dataset", "mnist", "--data-dir", data,
            "--batch-size", "12", "--lr", "0.05", "--schedule", "none", "--augment",
            "--out", str(out), *extra]


def _single_process_train(data, out, *extra):
    env = dict(os.environ, PYTHONPATH=_package_parent() + os.pathsep + HERE,
               CONVCORE_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    for v in dist._LAUNCHER_VARS:
        env.pop(v, None)
    res = subprocess.run([sys.executable, *CLI, *_train_args(data, out, *extra)], env=env,
                         capture_output=True, text=True, timeout=JOB_TIMEOUT, cwd=HERE)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _checkpoint(path):
    with np.load(os.path.join(path, "checkpoint.npz")) as f:
        return {k: f[k] for k in f.files if k.startswith(("model/", "optim/"))}


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_cli_distributed_training_matches_single_process(tmp_path, idx_data, ranks):
    pytest.importorskip("convcore.nn")
    # 120 images in batches of 12 (3 per rank with 4 ranks), augmented: the
    # shards must see the same crops and flips as the single process.
    single, multi = tmp_path / "single", tmp_path / "multi"
    _single_process_train(idx_data, single, "--epochs", "2")
    res = _job(ranks, *_train_args(idx_data, multi, "--epochs", "2", "--distributed"),
               program=CLI, cwd=tmp_path)
    a, b = _checkpoint(single), _checkpoint(multi)
    assert sorted(a) == sorted(b)
    for k in a:
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    with open(single / "metrics.json") as fh:
        ms = json.load(fh)
    with open(multi / "metrics.json") as fh:
        mm = json.load(fh)
    # Sharded evaluation reduced over the ranks: the same confusion matrix.
    assert mm["confusion"] == ms["confusion"]
    assert sum(map(sum, mm["confusion"])) == 37
    assert ms["history"][1]["train_loss"] < ms["history"][0]["train_loss"]   # it trained
    for hs, hm in zip(ms["history"], mm["history"]):
        assert hm["train_loss"] == pytest.approx(hs["train_loss"], rel=1e-4)
        assert hm["train_acc"] == pytest.approx(hs["train_acc"])
        assert hm["test_loss"] == pytest.approx(hs["test_loss"], rel=1e-4)
    # Rank 0 alone prints.
    assert res.stdout.count("done: test accuracy") == 1
    assert res.stdout.count("epoch   2/2") == 1


@pytest.mark.mpi
def test_cli_distributed_resume_equals_uninterrupted_run(tmp_path, idx_data):
    pytest.importorskip("convcore.nn")
    full, part = tmp_path / "full", tmp_path / "part"
    _job(2, *_train_args(idx_data, full, "--epochs", "3", "--distributed"),
         program=CLI, cwd=tmp_path)
    _job(2, *_train_args(idx_data, part, "--epochs", "1", "--distributed"),
         program=CLI, cwd=tmp_path)
    res = _job(2, *_train_args(idx_data, part, "--epochs", "3", "--distributed",
                               "--resume", str(part / "checkpoint.npz")),
               program=CLI, cwd=tmp_path)
    assert "epoch   1/3" not in res.stdout and "epoch   3/3" in res.stdout
    a, b = _checkpoint(full), _checkpoint(part)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)


@pytest.mark.mpi
def test_cli_launched_without_distributed_is_refused(tmp_path, idx_data):
    exe, extra = _launcher()
    env = dict(os.environ, PYTHONPATH=_package_parent() + os.pathsep + HERE)
    res = subprocess.run([exe, *extra, "-n", "2", sys.executable, *CLI,
                          *_train_args(idx_data, tmp_path / "o", "--epochs", "1")],
                         env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT,
                         cwd=tmp_path)
    assert res.returncode != 0
    assert "without --distributed" in res.stdout + res.stderr
    assert not (tmp_path / "o" / "checkpoint.npz").exists()


def test_cli_distributed_without_launcher_says_how_to_launch(tmp_path, idx_data):
    env = dict(os.environ, PYTHONPATH=_package_parent() + os.pathsep + HERE)
    for v in dist._LAUNCHER_VARS:
        env.pop(v, None)
    res = subprocess.run([sys.executable, *CLI, *_train_args(idx_data, tmp_path / "o",
                                                             "--distributed")],
                         env=env, capture_output=True, text=True, timeout=60, cwd=HERE)
    assert res.returncode == 1
    if dist.is_available():
        assert "mpiexec -n 2 convcore train --distributed" in res.stderr
    else:
        assert 'pip install "convcore[mpi]"' in res.stderr


def _compare_checkpoints(a, b, rtol):
    assert sorted(a) == sorted(b)
    for k in a:
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)
        else:
            np.testing.assert_array_equal(b[k], a[k], err_msg=k)


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_cli_sync_bn_matches_single_process_batch_norm(tmp_path, idx_data, ranks):
    pytest.importorskip("convcore.nn")
    single, multi = tmp_path / "single", tmp_path / "multi"
    extra = ("--epochs", "2", "--model", "_dist_worker:bn_net")
    _single_process_train(idx_data, single, *extra)
    res = _job(ranks, *_train_args(idx_data, multi, *extra, "--distributed", "--sync-bn"),
               program=CLI, cwd=tmp_path)
    assert "--sync-bn: 1 BatchNorm layer(s) synchronised" in res.stdout
    a, b = _checkpoint(single), _checkpoint(multi)
    assert any("running_var" in k for k in a)
    _compare_checkpoints(a, b, 1e-4)


@pytest.mark.mpi
def test_cli_per_rank_batch_norm_is_the_default(tmp_path, idx_data):
    pytest.importorskip("convcore.nn")
    single, multi = tmp_path / "single", tmp_path / "multi"
    extra = ("--epochs", "1", "--model", "_dist_worker:bn_net")
    _single_process_train(idx_data, single, *extra)
    res = _job(2, *_train_args(idx_data, multi, *extra, "--distributed"), program=CLI,
               cwd=tmp_path)
    assert "--sync-bn" not in res.stdout
    a, b = _checkpoint(single), _checkpoint(multi)
    k = next(k for k in a if k.endswith("weight") and a[k].ndim == 4)
    assert not np.allclose(a[k], b[k], rtol=1e-4, atol=1e-6)


@pytest.mark.mpi
def test_cli_lenet5_two_ranks_match_single_process(tmp_path):
    pytest.importorskip("convcore.models")
    import _synthetic
    data = str(_synthetic.write_idx_dataset(str(tmp_path / "d28"), n_train=64, n_test=20,
                                            size=28))
    single, multi = tmp_path / "single", tmp_path / "multi"
    args = ("--model", "lenet5", "--epochs", "1", "--batch-size", "16")
    _single_process_train(data, single, *args)
    _job(2, *_train_args(data, multi, *args, "--distributed"), program=CLI, cwd=tmp_path)
    _compare_checkpoints(_checkpoint(single), _checkpoint(multi), 1e-4)
