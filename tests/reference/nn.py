"""Independent oracles for the layer tests: central differences and naive
loops that share no code with convcore."""
import numpy as np
import pytest


def numeric_grad(f, x, eps=1e-6, idx=None):
    """d f() / d x by central differences (x is perturbed in place), at the
    flat indices ``idx`` (default: all; the other entries stay 0)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    assert flat.base is x or flat is x or np.shares_memory(flat, x)
    for i in (range(flat.size) if idx is None else idx):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def batch_norm_train_naive(x, gamma, beta, eps):
    """Per channel: mean and biased variance over (n, h, w) by explicit loops."""
    N, C, H, W = x.shape
    y = np.empty_like(x)
    for c in range(C):
        vals = [x[n, c, h, w] for n in range(N) for h in range(H) for w in range(W)]
        m = sum(vals) / len(vals)
        v = sum((t - m) ** 2 for t in vals) / len(vals)
        for n in range(N):
            for h in range(H):
                for w in range(W):
                    y[n, c, h, w] = (x[n, c, h, w] - m) / np.sqrt(v + eps) * gamma[c] + beta[c]
    return y


def lrn_naive(x, size, alpha, beta, k):
    """b_c = a_c / (k + alpha/size * sum_{j=c-size//2}^{c+(size-1)//2} a_j^2)^beta."""
    N, C = x.shape[:2]
    y = np.empty_like(x)
    for n in range(N):
        for c in range(C):
            s = np.zeros(x.shape[2:])
            for j in range(c - size // 2, c + (size - 1) // 2 + 1):
                if 0 <= j < C:
                    s = s + x[n, j] ** 2
            y[n, c] = x[n, c] / (k + alpha / size * s) ** beta
    return y


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny layers run faster on one thread than on a team that must wait for
    a busy machine; results do not depend on the thread count."""
    import convcore as cc
    n = cc.get_num_threads()
    cc.set_num_threads(1)
    yield
    cc.set_num_threads(n)
