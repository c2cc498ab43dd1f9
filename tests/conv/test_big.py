"""Big tensors: sizes past 2**31 elements go through 64-bit offsets and the
bounded im2col workspace (slow: run with ``pytest -m slow``)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import convcore as cc

HERE = os.path.dirname(os.path.abspath(__file__))

# x (37, 4, 256, 256), w (2, 4, 15, 15), padding 7: the im2col of the whole batch
# would be 37 * (4*15*15) * (256*256) = 2.18e9 elements (8.7 GB of float32),
# past 2**31; one image's columns (236 MB) fit the 256 MiB workspace budget.
N, C, H, W, K, KS, P = 37, 4, 256, 256, 2, 15, 7
LIMIT = 256 * 2**20

_CHILD = r"""
import json, resource, sys
import numpy as np
import convcore as cc
N, C, H, W, K, KS, P, LIMIT, out = json.loads(sys.argv[1])
rng = np.random.default_rng(11)
x = rng.standard_normal((N, C, H, W), dtype=np.float32)
w = rng.standard_normal((K, C, KS, KS), dtype=np.float32)
cc.set_workspace_limit(LIMIT)
y = cc.conv2d(x, w, padding=P)
dy = rng.standard_normal(y.shape, dtype=np.float32)
gx, gw, gb = cc.conv2d_backward(dy, x, w, padding=P)
np.savez(out, x=x, w=w, y=y[[0, N // 2, N - 1]], dy=dy, gw=gw, gb=gb,
         gx=gx[[0, N // 2, N - 1]], shape=np.array(y.shape))
print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.mark.slow
def test_conv_whose_im2col_exceeds_2_31_elements_runs_in_bounded_workspace(tmp_path):
    assert N * C * KS * KS * H * W > 2**31
    out = str(tmp_path / "big.npz")
    where = os.path.dirname(os.path.dirname(os.path.abspath(cc.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [where] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    res = subprocess.run([sys.executable, "-c", _CHILD,
                          json.dumps([N, C, H, W, K, KS, P, LIMIT, out])],
                         capture_output=True, text=True, env=env, timeout=1200)
    assert res.returncode == 0, res.stdout + res.stderr
    peak = json.loads(res.stdout.strip().splitlines()[-1])["maxrss_mb"]
    d = np.load(out)
    assert tuple(d["shape"]) == (N, K, H, W)
    # inputs and outputs are ~120 MB, the budget 256 MiB; an unbounded im2col
    # would have needed 8.7 GB
    print(f"\npeak RSS {peak:.0f} MB")
    assert peak < 1024, f"peak RSS {peak:.0f} MB: the workspace was not bounded"

    # slices against direct float64 sums (images 0, N/2, N-1; borders and interior)
    xall, w, y = d["x"], d["w"].astype(np.float64), d["y"]
    x = xall[[0, N // 2, N - 1]].astype(np.float64)
    xp = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
    rows = [0, 1, 7, 128, 200, 248, 255]
    for m in range(3):
        for i in rows:
            for j in rows:
                patch = xp[m, :, i:i + KS, j:j + KS]
                ref = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2]))
                bound = np.tensordot(np.abs(w), np.abs(patch), axes=([1, 2, 3], [0, 1, 2]))
                err = np.abs(y[m, :, i, j] - ref)
                assert np.all(err <= C * KS * KS * 2.0**-24 * bound), (m, i, j, err)
    # grad_input on the saved images: dx[c,i,j] = sum_k,a,b w[k,c,a,b] dy[k,i+P-a,j+P-b]
    gx, dy = d["gx"], d["dy"]
    dyp = np.pad(dy[[0, N // 2, N - 1]].astype(np.float64), ((0, 0), (0, 0), (P, P), (P, P)))
    for m in range(3):
        for i in rows:
            for j in rows:
                # dx[c, i, j] = sum_k sum_a,b w[k, c, a, b] * dy[k, i + P - a, j + P - b]
                win = dyp[m, :, i:i + KS, j:j + KS][:, ::-1, ::-1]
                ref = np.tensordot(win, w, axes=([0, 1, 2], [0, 2, 3]))
                bound = np.tensordot(np.abs(win), np.abs(w), axes=([0, 1, 2], [0, 2, 3]))
                assert np.all(np.abs(gx[m, :, i, j] - ref) <= K * KS * KS * 2.0**-24 * bound)
    # grad_weight sums over the whole batch (every workspace chunk): a few taps,
    # each a float64 sum over all N*H*W positions
    xpa = np.pad(xall, ((0, 0), (0, 0), (P, P), (P, P)))
    dy64 = dy.astype(np.float64)
    for a, b in [(0, 0), (7, 7), (14, 14), (3, 11), (14, 0)]:
        win = xpa[:, :, a:a + H, b:b + W].astype(np.float64)
        ref = np.tensordot(dy64, win, axes=([0, 2, 3], [0, 2, 3]))          # (K, C)
        bound = np.tensordot(np.abs(dy64), np.abs(win), axes=([0, 2, 3], [0, 2, 3]))
        assert np.all(np.abs(d["gw"][:, :, a, b] - ref) <= N * H * W * 2.0**-24 * bound)
    np.testing.assert_allclose(d["gb"], dy64.sum(axis=(0, 2, 3)), rtol=1e-5)
