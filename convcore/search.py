"""A small evolutionary search over repeated blocks (the notes' second way to
learn an architecture: search for the block, then repeat it).

The network is ``stages`` stages of one block repeated ``depth`` times --
a ``kernel`` x ``kernel`` convolution without bias, batch norm, ReLU -- each
stage followed by a 2x2 max pool and doubling the ``width``, then global
average pooling and one linear layer.  A genome is ``{"depth", "width",
"kernel"}``; a mutation moves one of them to a neighbouring value.

:func:`evolve` is regularised ("aging") evolution: a population of the
latest candidates; each step samples a few, mutates the best of the sample,
trains and scores the child, and drops the oldest member.  The budget is a
number of evaluations or a number of seconds.  ``convcore search --budget 8``
runs it on a training set: each candidate is trained briefly on part of the
training images and scored on the rest (the test set is never looked at).
"""
from __future__ import annotations

import json
import os
import time
from collections import OrderedDict

import numpy as np

from convcore._validate import as_int
from convcore.nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d,
                         ReLU, Sequential)
from convcore._rng import as_rng

__all__ = ["SPACE", "block_net", "mutate", "random_genome", "evolve", "search_run",
           "parse_budget"]

#: The values each gene may take, in order (a mutation moves to a neighbour).
#: Sized for a CPU: the largest candidate costs about 23M MACs per 28x28 image.
SPACE = OrderedDict([("depth", (1, 2, 3)), ("width", (4, 8, 12, 16)), ("kernel", (1, 3, 5))])


def block_net(depth=2, width=8, kernel=3, stages=2, num_classes=10, in_channels=1, dtype=None,
              rng=None):
    """``stages`` stages of ``depth`` repeated blocks (``kernel`` x ``kernel``
    conv, batch norm, ReLU) with ``width``, ``2 width``, ... channels, a 2x2
    max pool after each stage, global average pooling and a linear layer.

    Examples
    --------
    >>> from convcore.search import block_net
    >>> net = block_net(depth=2, width=8, kernel=3, rng=0)
    >>> net.num_parameters()
    4370
    """
    depth = as_int(depth, "depth", minimum=1)
    width = as_int(width, "width", minimum=1)
    kernel = as_int(kernel, "kernel", minimum=1)
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd (the block keeps the map size), got {kernel}")
    stages = as_int(stages, "stages", minimum=1)
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    c = as_int(in_channels, "in_channels", minimum=1)
    rng = as_rng(rng)
    layers = []
    for s in range(stages):
        w = width * 2 ** s
        for b in range(depth):
            n = f"stage{s + 1}.block{b + 1}"
            layers += [(f"{n}.conv", Conv2d(c, w, kernel, padding=kernel // 2, bias=False,
                                            dtype=dtype, rng=rng)),
                       (f"{n}.bn", BatchNorm2d(w, dtype=dtype)), (f"{n}.relu", ReLU())]
            c = w
        layers.append((f"stage{s + 1}.pool", MaxPool2d(2)))
    layers += [("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
               ("fc", Linear(c, num_classes, dtype=dtype, rng=rng))]
    # module names may not contain dots: number the layers, keep the names readable
    return Sequential(OrderedDict((n.replace(".", "_"), m) for n, m in layers))


def _check(genome):
    if not isinstance(genome, dict) or set(genome) != set(SPACE):
        raise ValueError(f"a genome is a dict with keys {list(SPACE)}, got {genome!r}")
    for k, v in genome.items():
        if v not in SPACE[k]:
            raise ValueError(f"{k} must be one of {SPACE[k]}, got {v!r}")
    return genome


def random_genome(rng):
    """A genome with every gene drawn uniformly from :data:`SPACE`."""
    return {k: vals[int(rng.integers(len(vals)))] for k, vals in SPACE.items()}


def mutate(genome, rng):
    """A copy of ``genome`` with one gene moved to a neighbouring value.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.search import mutate
    >>> g = {"depth": 2, "width": 8, "kernel": 3}
    >>> child = mutate(g, np.random.default_rng(0))
    >>> sum(child[k] != g[k] for k in g)
    1
    """
    _check(genome)
    child = dict(genome)
    key = list(SPACE)[int(rng.integers(len(SPACE)))]
    vals = SPACE[key]
    i = vals.index(genome[key])
    steps = [j for j in (i - 1, i + 1) if 0 <= j < len(vals)]
    child[key] = vals[steps[int(rng.integers(len(steps)))]]
    return child


def parse_budget(text):
    """``'8'`` -> (8 evaluations, None); ``'90s'`` / ``'2m'`` -> (None, seconds)."""
    t = str(text).strip().lower()
    try:
        if t.endswith("s"):
            secs = float(t[:-1])
        elif t.endswith("m"):
            secs = 60 * float(t[:-1])
        else:
            n = int(t)
            if n < 1:
                raise ValueError
            return n, None
    except ValueError:
        raise ValueError(f"budget must be a number of evaluations (8) or a time (90s, 2m), "
                         f"got {text!r}") from None
    if not secs > 0:
        raise ValueError(f"budget time must be > 0, got {text!r}")
    return None, secs


def evolve(evaluate, budget_evals=None, budget_seconds=None, population=4, sample=2, seed=0,
           log=print):
    """Regularised evolution of genomes scored by ``evaluate(genome) -> dict``
    (with a ``'score'`` to maximise).

    The first ``population`` candidates are random; then each step samples
    ``sample`` members of the population, mutates the best, evaluates the
    child and drops the oldest member.  A genome already evaluated is not
    trained again (its earlier result is reused and does not count against
    the budget of evaluations).  Stops after ``budget_evals`` evaluations or
    once ``budget_seconds`` have passed (the candidate in training is
    finished).

    Returns ``(history, best)``: every evaluated candidate in order (genome,
    parent, result, seconds) and the best of them.
    """
    if (budget_evals is None) == (budget_seconds is None):
        raise ValueError("give exactly one of budget_evals and budget_seconds")
    population = as_int(population, "population", minimum=1)
    sample = as_int(sample, "sample", minimum=1)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    history, seen, pop = [], {}, []

    def done():
        if budget_evals is not None:
            return len(history) >= budget_evals
        return time.perf_counter() - t0 >= budget_seconds

    tries = 0
    while not done() and tries < 100 * (len(history) + 1):
        tries += 1
        if len(history) < population:
            genome, parent = random_genome(rng), None
        else:
            picks = rng.choice(len(pop), size=min(sample, len(pop)), replace=False)
            parent = max((pop[int(i)] for i in picks), key=lambda c: c["result"]["score"])
            genome, parent = mutate(parent["genome"], rng), parent["genome"]
        key = tuple(genome[k] for k in SPACE)
        if key in seen:
            cand = dict(seen[key], parent=parent)
            pop.append(cand)
            pop = pop[-population:]
            continue
        t = time.perf_counter()
        result = evaluate(dict(genome))
        cand = {"genome": genome, "parent": parent, "result": result,
                "seconds": time.perf_counter() - t}
        seen[key] = cand
        history.append(cand)
        pop.append(cand)
        pop = pop[-population:]
        log(f"candidate {len(history):3d}: depth {genome['depth']} width {genome['width']:2d} "
            f"kernel {genome['kernel']}  score {result['score']:.4f}  "
            f"({cand['seconds']:.1f} s)")
    if not history:
        raise RuntimeError("the budget allowed no evaluation")
    best = max(history, key=lambda c: c["result"]["score"])
    return history, best


def search_run(dataset="fashion-mnist", data_dir=None, budget="8", epochs=1, train_images=2000,
               val_images=2000, population=4, sample=2, stages=2, lr=0.05, batch_size=64,
               seed=0, threads=None, out="runs/search", log=print):
    """Search block networks on a dataset: each candidate is trained for
    ``epochs`` on ``train_images`` training images and scored (accuracy) on
    ``val_images`` other training images.  Writes ``search.json`` in ``out``
    (every candidate with its genome, parameters, MACs, accuracy and time)
    and returns its content."""
    from convcore import _config
    from convcore import data as _data
    from convcore._summary import summary
    from convcore.prune import fine_tune
    from convcore.train.evaluate import _forward_batches, accuracy_from_confusion
    n_evals, secs = parse_budget(budget)
    train_images = as_int(train_images, "train_images", minimum=1)
    val_images = as_int(val_images, "val_images", minimum=1)
    if threads:
        _config.set_num_threads(threads)
    train, _ = _data.load_dataset(dataset, data_dir)
    if len(train) < 2:
        raise ValueError(f"{dataset}: too few training images ({len(train)}) to search")
    order = np.random.default_rng([seed, 7]).permutation(len(train))
    n_val = min(val_images, len(train) // 2)
    val = train.subset(order[:n_val])
    fit_set = train.subset(order[n_val:n_val + train_images])
    mean, std = _data.channel_stats(fit_set.images)
    C, shape = train.num_classes, tuple(train.images.shape[1:])
    train_it = _data.BatchIterator(fit_set.images, fit_set.labels, batch_size, seed=seed,
                                   mean=mean, std=std)
    val_it = _data.BatchIterator(val.images, val.labels, 500, shuffle=False, mean=mean,
                                 std=std)

    def evaluate(genome):
        net = block_net(stages=stages, num_classes=C, in_channels=shape[0],
                        rng=np.random.default_rng(seed), **genome)
        s = summary(net, shape)
        fine_tune(net, train_it, epochs, lr=lr, log=lambda m: None)
        conf, _ = _forward_batches(net, val_it, np, C)
        acc = accuracy_from_confusion(conf)[0]
        return {"score": acc, "val_acc": acc, "params": s.total_params, "macs": s.total_macs}

    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        limiter = None
    log(f"convcore search: {dataset}, {len(fit_set)} training / {len(val)} validation images, "
        f"budget {budget}, {epochs} epoch(s) per candidate")
    try:
        history, best = evolve(evaluate, n_evals, secs, population, sample, seed, log)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    res = {"dataset": dataset, "budget": str(budget), "epochs": epochs, "stages": stages,
           "train_images": len(fit_set), "val_images": len(val), "population": population,
           "sample": sample, "seed": seed, "space": {k: list(v) for k, v in SPACE.items()},
           "candidates": history, "best": best}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "search.json"), "w") as f:
        json.dump(res, f, indent=1)
    return res


def format_search_report(res):
    b = res["best"]
    g, r = b["genome"], b["result"]
    return (f"{len(res['candidates'])} candidates; best: depth {g['depth']}, width "
            f"{g['width']}, kernel {g['kernel']} -- validation accuracy {r['val_acc']:.2%}, "
            f"{r['params']:,} parameters, {r['macs']:,} MACs\n"
            f"build it: convcore.search.block_net(depth={g['depth']}, width={g['width']}, "
            f"kernel={g['kernel']}, stages={res['stages']})")


def add_cli(sub):
    """The ``convcore search`` subcommand."""
    p = sub.add_parser("search", help="evolutionary search over repeated blocks (depth, "
                                      "width, kernel)",
                       description="Regularised evolution of block networks: each candidate "
                                   "is trained briefly and scored on held-out training images.")
    p.add_argument("--budget", default="8", help="evaluations (8) or time (90s, 2m) "
                                                 "(default %(default)s)")
    p.add_argument("--dataset", default="fashion-mnist",
                   choices=("fashion-mnist", "mnist", "cifar10"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=1, help="training epochs per candidate")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=2000)
    p.add_argument("--population", type=int, default=4)
    p.add_argument("--sample", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="runs/search")
    p.set_defaults(func=cmd_search)


def cmd_search(args):
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    res = search_run(args.dataset, args.data_dir, args.budget, args.epochs, args.train_images,
                     args.val_images, args.population, args.sample, lr=args.lr,
                     seed=args.seed, threads=args.threads, out=args.out)
    print(format_search_report(res))
    return 0
