"""Thread safety of every op family: concurrent Python threads (convolution,
im2col/col2im, the pools, batch norm, ReLU and LRN) get exactly the serial results, and the GIL is
released while the C core works.  The ops are a table per family (OPS); the
property is written once and parametrised over it.

The speed-up of two threads over one doing both jobs is measured and printed
(run with ``-s``), never asserted: timings on a shared machine are reported,
not tested.
"""
import threading
import time

import numpy as np
import pytest

import convcore as cc

N_THREADS = 8


def _jobs(dtype, count):
    rng = np.random.default_rng(7)
    jobs = []
    for i in range(count):
        n, c, k = 1 + i % 3, 2 + i % 4, 3 + i % 5
        h, w = 9 + i, 13 - i % 4
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        wt = rng.standard_normal((k, c, 3, 2 + i % 2)).astype(dtype)
        opts = dict(stride=1 + i % 2, padding=i % 3, dilation=1 + (i % 4 == 3))
        jobs.append((x, wt, opts))
    return jobs


def _conv_ops(x, w, opts):
    y = cc.conv2d(x, w, **opts)
    grads = cc.conv2d_backward(np.ones_like(y) * 0.5 + y, x, w, **opts)
    return (y,) + tuple(grads)


def _unfold_ops(x, w, opts):
    cols = cc.im2col(x, w.shape[2:], **opts)
    back = cc.col2im(cols, x.shape[2:], w.shape[2:], **opts)
    return (cols, back)


def _max_pool_ops(x, w, opts):
    k = (2, 3)
    mp, idx = cc.max_pool2d(x, k, 1, 1, ceil_mode=True, return_indices=True)
    mdx = cc.max_pool2d_backward(mp, idx, x.shape)
    return (mp, idx, mdx)


def _avg_pool_ops(x, w, opts):
    ap = cc.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    adx = cc.avg_pool2d_backward(ap, x.shape, 3, 2, 1, ceil_mode=True,
                                 count_include_pad=False)
    return (ap, adx)


def _adaptive_pool_ops(x, w, opts):
    gp = cc.adaptive_avg_pool2d(x, (3, 2))
    gdx = cc.adaptive_avg_pool2d_backward(gp, x.shape)
    return (gp, gdx)


def _batch_norm_ops(x, w, opts):
    # training mode without running statistics: nothing shared is written
    c = x.shape[1]
    gamma = np.linspace(0.5, 1.5, c).astype(x.dtype)
    beta = np.linspace(-1.0, 1.0, c).astype(x.dtype)
    y = cc.batch_norm(x, None, None, gamma, beta, training=True)
    return (y,) + tuple(cc.batch_norm_backward(y, x, None, None, gamma, training=True))


def _relu_lrn_ops(x, w, opts):
    r = cc.relu(x - 0.25)
    return (r, cc.relu_backward(x, x - 0.25), cc.local_response_norm(r, 3))


# family -> the ops each job runs (forward and backward), in this order
OPS = {
    "conv": [_conv_ops, _unfold_ops],
    "pool": [_max_pool_ops, _avg_pool_ops, _adaptive_pool_ops],
    "norm": [_batch_norm_ops, _relu_lrn_ops],
}


def _runner(family):
    def run(job):
        x, w, opts = job
        return tuple(out for op in OPS[family] for out in op(x, w, opts))
    return run


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("family", list(OPS))
def test_eight_threads_give_the_serial_results(family, dtype):
    _run = _runner(family)
    jobs = _jobs(dtype, 24)
    serial = [_run(j) for j in jobs]
    results = [[None] * len(jobs) for _ in range(N_THREADS)]
    errors = []
    start = threading.Barrier(N_THREADS)

    def worker(t):
        try:
            start.wait()
            for rep in range(3):
                # each thread walks the jobs in its own order, so different
                # shapes run side by side
                for i in np.random.default_rng(t * 10 + rep).permutation(len(jobs)):
                    results[t][i] = _run(jobs[i])
                    for got, want in zip(results[t][i], serial[i]):
                        if not np.array_equal(got, want):
                            errors.append((t, rep, int(i)))
                            return
        except BaseException as e:   # noqa: BLE001 - reported below
            errors.append((t, repr(e)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, f"results differ from the serial run: {errors[:5]}"


def test_threads_changing_settings_concurrently_still_get_identical_results():
    """set_num_threads / set_workspace_limit from other threads only change speed."""
    x = np.random.default_rng(3).standard_normal((6, 8, 20, 20))
    w = np.random.default_rng(4).standard_normal((16, 8, 3, 3))
    want = cc.conv2d(x, w, padding=1)
    threads0, limit0 = cc.get_num_threads(), cc.get_workspace_limit()
    stop = threading.Event()
    bad = []

    def fiddle():
        i = 0
        while not stop.is_set():
            cc.set_num_threads(1 + i % 4)
            cc.set_workspace_limit(8 * 20 * 9 * 400 * (1 + i % 3))
            i += 1

    def compute():
        for _ in range(20):
            if not np.array_equal(cc.conv2d(x, w, padding=1), want):
                bad.append(1)

    f = threading.Thread(target=fiddle)
    workers = [threading.Thread(target=compute) for _ in range(4)]
    f.start()
    try:
        for th in workers:
            th.start()
        for th in workers:
            th.join()
    finally:
        stop.set()
        f.join()
        cc.set_num_threads(threads0)
        cc.set_workspace_limit(limit0)
    assert not bad


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_gil_is_released_during_c_work():
    """Two threads on two cores against one thread doing both jobs (printed).

    What is asserted is independent of timing: while one thread is inside a
    long C call, another thread runs Python code.
    """
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 32, 48, 48)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    saved = cc.get_num_threads()
    cc.set_num_threads(1)              # one core per call: the threads give the parallelism
    try:
        job = lambda: cc.conv2d(x, w, padding=1)  # noqa: E731
        job()
        one = min(_timed(lambda: (job(), job())) for _ in range(3))

        def two_threads():
            ts = [threading.Thread(target=job) for _ in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        two = min(_timed(two_threads) for _ in range(3))

        # progress of a pure-Python thread while the main thread is in C
        ticks = [0]
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks[0] += 1
        sp = threading.Thread(target=spin)
        sp.start()
        try:
            time.sleep(0.01)
            inside = []
            for _ in range(3):
                t0 = ticks[0]
                job()
                inside.append(ticks[0] - t0)
        finally:
            stop.set()
            sp.join()
    finally:
        cc.set_num_threads(saved)
    print(f"\nGIL: one thread, two conv2d calls {one * 1e3:.1f} ms; two threads, one call "
          f"each {two * 1e3:.1f} ms; speed-up {one / two:.2f}x "
          f"(Python thread advanced {inside} ticks during single calls)")
    assert max(inside) > 0
