"""Programs the MPI tests launch with ``mpiexec -n W python _dist_worker.py``.

Also imported by the tests for the single-process reference runs: the tiny
model below is written here with NumPy and ``convcore.conv2d`` only, so the
data-parallel machinery is checked independently of the layer API.
"""
import json
import os
import sys
import time

import numpy as np


class Param:
    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)


class TinyNet:
    """conv 3x3 (1 -> 4, pad 1) -> ReLU -> flatten -> linear (4*8*8 -> 5)."""

    def __init__(self, seed, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.w = Param((rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(dtype))
        self.b = Param((rng.standard_normal(4) * 0.1).astype(dtype))
        self.fw = Param((rng.standard_normal((5, 256)) * 0.05).astype(dtype))
        self.fb = Param(np.zeros(5, dtype=dtype))

    def parameters(self):
        return [self.w, self.b, self.fw, self.fb]

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def forward(self, x):
        import convcore as cc
        self.x = x
        self.h = cc.conv2d(x, self.w.data, self.b.data, padding=1)
        self.a = np.maximum(self.h, 0)
        self.f = self.a.reshape(len(x), 256)
        return self.f @ self.fw.data.T + self.fb.data

    def backward(self, dlogits):
        import convcore as cc
        self.fw.grad += dlogits.T @ self.f
        self.fb.grad += dlogits.sum(axis=0)
        da = (dlogits @ self.fw.data).reshape(self.a.shape) * (self.h > 0)
        _, gw, gb = cc.conv2d_backward(da, self.x, self.w.data, padding=1)
        self.w.grad += gw
        self.b.grad += gb


class BatchNorm2d:
    """Plain BatchNorm over the batch it is given (torch's attribute names)."""

    def __init__(self, C, dtype, eps=1e-5, momentum=0.1):
        self.weight = Param(np.ones(C, dtype))
        self.bias = Param(np.zeros(C, dtype))
        self.running_mean = np.zeros(C, dtype)
        self.running_var = np.ones(C, dtype)
        self.eps, self.momentum, self.training = eps, momentum, True

    def forward(self, x):
        m = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        self.running_mean[...] = (1 - self.momentum) * self.running_mean + self.momentum * mean
        self.running_var[...] = ((1 - self.momentum) * self.running_var
                                 + self.momentum * var * m / (m - 1))
        s = 1 / np.sqrt(var + self.eps)
        self.xh = (x - mean[:, None, None]) * s[:, None, None]
        self.s = s
        return self.xh * self.weight.data[:, None, None] + self.bias.data[:, None, None]

    def backward(self, dy):
        m = dy.shape[0] * dy.shape[2] * dy.shape[3]
        self.bias.grad += dy.sum(axis=(0, 2, 3))
        self.weight.grad += (dy * self.xh).sum(axis=(0, 2, 3))
        dxh = dy * self.weight.data[:, None, None]
        return (self.s[:, None, None] / m) * (m * dxh - dxh.sum(axis=(0, 2, 3))[:, None, None]
                                              - self.xh * (dxh * self.xh).sum(axis=(0, 2, 3))
                                              [:, None, None])


class TinyBNNet(TinyNet):
    """TinyNet with a BatchNorm between the convolution and the ReLU: the
    plain one above, or with ``layer_bn`` convcore.nn's (which
    convert_sync_batchnorm can synchronise)."""

    def __init__(self, seed, dtype=np.float64, layer_bn=False):
        super().__init__(seed, dtype)
        if layer_bn:
            from convcore import nn
            self.bn = nn.BatchNorm2d(4, dtype=dtype)
        else:
            self.bn = BatchNorm2d(4, dtype)

    def parameters(self):
        return [self.w, self.b, self.bn.weight, self.bn.bias, self.fw, self.fb]

    def forward(self, x):
        import convcore as cc
        self.x = x
        self.c = cc.conv2d(x, self.w.data, self.b.data, padding=1)
        self.h = self.bn.forward(self.c)
        self.a = np.maximum(self.h, 0)
        self.f = self.a.reshape(len(x), 256)
        return self.f @ self.fw.data.T + self.fb.data

    def backward(self, dlogits):
        import convcore as cc
        self.fw.grad += dlogits.T @ self.f
        self.fb.grad += dlogits.sum(axis=0)
        da = (dlogits @ self.fw.data).reshape(self.a.shape) * (self.h > 0)
        dc = self.bn.backward(da)
        _, gw, gb = cc.conv2d_backward(dc, self.x, self.w.data, padding=1)
        self.w.grad += gw
        self.b.grad += gb


def plain_net(in_channels=1, num_classes=10, rng=None):
    """A convcore.nn model without BatchNorm or Dropout (``_dist_worker:plain_net``)."""
    from convcore import nn
    rng = np.random.default_rng(rng)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1, rng=rng), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes, rng=rng))


def bn_net(in_channels=1, num_classes=10, rng=None):
    """A convcore.nn model with BatchNorm, for ``--model _dist_worker:bn_net``."""
    from convcore import nn
    rng = np.random.default_rng(rng)
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, num_classes, rng=rng))


def loss_and_grad(logits, y):
    n = len(y)
    z = logits - logits.max(axis=1, keepdims=True) if n else logits
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True) if n else 1
    loss = -np.log(p[np.arange(n), y]).sum()
    d = p.copy()
    d[np.arange(n), y] -= 1
    return loss, d / max(n, 1)


def make_data(n=44, seed=7, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(dtype)
    y = rng.integers(0, 5, n)
    return x, y


class SGD:
    def __init__(self, params, lr=0.1, momentum=0.9):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.buf = [np.zeros_like(p.data) for p in params]

    def step(self):
        for p, v in zip(self.params, self.buf):
            v *= self.momentum
            v += p.grad
            p.data -= self.lr * v


def train_steps(model, opt, x, y, batch, first, last, seed, batches_factory, sync):
    """Steps ``first .. last-1`` (global numbering); epoch and position come
    from the step number, as a resumed run computes them."""
    per_epoch = -(-len(x) // batch)
    step = first
    while step < last:
        epoch, start = divmod(step, per_epoch)
        it = batches_factory(epoch, start)
        for idx in it:
            if step >= last:
                break
            model.zero_grad()
            loss, d = loss_and_grad(model.forward(x[idx]), y[idx])
            model.backward(d)
            sync(model, len(idx))
            opt.step()
            step += 1


def save(path, model, opt, step):
    arrays = {f"p{i}": p.data for i, p in enumerate(model.parameters())}
    if hasattr(model, "bn"):
        arrays.update(running_mean=model.bn.running_mean, running_var=model.bn.running_var)
    arrays.update({f"m{i}": m for i, m in enumerate(opt.buf)})
    tmp = path + ".tmp.npz"
    np.savez(tmp, step=step, **arrays)
    os.replace(tmp, path)


def load(path, model, opt):
    with np.load(path) as f:
        for i, p in enumerate(model.parameters()):
            p.data[...] = f[f"p{i}"]
        for i, m in enumerate(opt.buf):
            m[...] = f[f"m{i}"]
        return int(f["step"])


def main():
    import convcore.distributed as dist
    scenario, out = sys.argv[1], sys.argv[2]
    dist.init()
    r, w = dist.rank(), dist.world_size()
    if scenario in ("train", "resume"):
        dtype = np.dtype(sys.argv[3])
        batch, first, last = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        ckpt = sys.argv[7] if len(sys.argv) > 7 else ""
        x, y = make_data(dtype=dtype)
        # Ranks other than 0 start from other weights: broadcast must fix that.
        bn = os.environ.get("TEST_BN", "")
        cls = TinyBNNet if bn else TinyNet
        model = (TinyBNNet(0 if r == 0 else 100 + r, dtype, layer_bn=True) if bn == "sync"
                 else cls(0 if r == 0 else 100 + r, dtype))
        if bn == "sync":
            assert dist.convert_sync_batchnorm(model) == 1
        opt = SGD(model.parameters())
        if scenario == "resume" and first > 0:
            if r == 0:   # only rank 0 reads the file; the others receive it
                first_read = load(ckpt, model, opt)
                if first_read != first:
                    raise RuntimeError(f"checkpoint is at step {first_read}, expected {first}")
            dist.broadcast_parameters(model)
            for m in opt.buf:
                m[...] = dist.allreduce_array(m if r == 0 else np.zeros_like(m))
        else:
            dist.broadcast_parameters(model)
        sb = dist.ShardedBatches(len(x), batch, seed=3)

        def factory(epoch, start):
            sb.set_epoch(epoch, start_batch=start)
            return iter(sb)

        train_steps(model, opt, x, y, batch, first, last, 3, factory,
                    lambda m, n: dist.allreduce_gradients(m, local_batch=n, bucket_bytes=1024))
        # Every rank must hold the same weights.
        for p in model.parameters():
            hi = dist.allreduce_array(p.data, "max")
            lo = dist.allreduce_array(p.data, "min")
            if not np.array_equal(hi, lo):
                raise RuntimeError("ranks disagree on the weights")
        if r == 0:
            save(os.path.join(out, "final.npz"), model, opt, last)
        # Sharded evaluation on the training set.
        a, b = dist.shard_bounds(len(x))
        loss, _ = loss_and_grad(model.forward(x[a:b]), y[a:b])
        pred = model.forward(x[a:b]).argmax(axis=1) if b > a else np.zeros(0, int)
        m = dist.reduce_metrics({"loss_sum": loss, "correct": int((pred == y[a:b]).sum()),
                                 "count": b - a})
        if r == 0:
            with open(os.path.join(out, "metrics.json"), "w") as fh:
                json.dump(m, fh)
    elif scenario == "state":
        class M:   # parameters plus non-parameter state, through state_dict
            def __init__(self, v):
                self.p = Param(np.full(3, float(v)))
                self.rm = np.full(2, float(v))
                self.steps = np.int64(10 * v)

            def parameters(self):
                return [self.p]

            def named_parameters(self):
                return [("p", self.p)]

            def state_dict(self):
                return {"p": self.p.data.copy(), "rm": self.rm.copy(), "steps": self.steps}

            def load_state_dict(self, d):
                self.p.data = np.array(d["p"])
                self.rm = np.array(d["rm"])
                self.steps = np.int64(d["steps"])

        m = M(r + 1)
        m.rm[...] = r + 1
        dist.average_buffers(m)
        averaged = m.rm.copy()
        m.rm[...] = r + 1
        dist.broadcast_parameters(m)
        sent = dist.broadcast_arrays({"a": np.arange(3.0), "lr": np.float64(0.5),
                                      "meta": np.array("text")} if r == 0 else None)
        res = {"averaged": averaged.tolist(), "p": m.p.data.tolist(), "rm": m.rm.tolist(),
               "steps": int(m.steps), "a": sent["a"].tolist(), "lr_ndim": sent["lr"].ndim,
               "lr": float(sent["lr"]), "meta": str(sent["meta"])}
        allres = dist._comm().gather(res, root=0)
        if r == 0:
            with open(os.path.join(out, "state.json"), "w") as fh:
                json.dump(allres, fh)
    elif scenario == "syncbn":
        rng = np.random.default_rng(5)
        xg = rng.standard_normal((10, 3, 4, 5)) * 2 + 1
        dyg = rng.standard_normal(xg.shape)
        weight, bias = rng.standard_normal(3), rng.standard_normal(3)
        a, b = dist.shard_bounds(len(xg))
        yl, mean, var, cache = dist.sync_batch_norm_forward(xg[a:b], weight, bias, eps=1e-5)
        dx, gw, gb = dist.sync_batch_norm_backward(dyg[a:b], cache)
        comm = dist._comm()
        ys, dxs = comm.gather(yl, root=0), comm.gather(dx, root=0)
        gw, gb = dist.allreduce_array(gw), dist.allreduce_array(gb)
        if r == 0:
            np.savez(os.path.join(out, "syncbn.npz"), y=np.concatenate(ys),
                     dx=np.concatenate(dxs), gw=gw, gb=gb, mean=mean, var=var)
    elif scenario in ("kill", "stop", "raise"):
        with open(os.path.join(out, f"pid{r}"), "w") as fh:
            fh.write(str(os.getpid()))
        g = np.ones(1000)
        model = [Param(g.copy())]
        for i in range(100000):
            dist.allreduce_gradients(model)
            if scenario == "raise" and r == 1 and i == 3:
                raise ValueError("deliberate failure on rank 1")
            time.sleep(0.02)
    else:
        raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
