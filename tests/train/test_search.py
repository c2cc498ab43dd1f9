"""convcore.search: block networks, mutations, regularised evolution under a
budget, and ``convcore search``."""
import json
import os

import numpy as np
import pytest

import convcore as cc
from convcore import search
from convcore.cli import main
from _synthetic import write_idx_dataset


def test_block_net_structure_and_parameters():
    net = search.block_net(depth=3, width=4, kernel=5, stages=2, num_classes=7, rng=0)
    s = cc.summary(net, (1, 12, 12))
    convs = [r for r in s.rows if r["type"] == "Conv2d"]
    assert len(convs) == 6
    assert [r["output_shape"][1:] for r in convs] == [(4, 12, 12)] * 3 + [(8, 6, 6)] * 3
    expect = (25 * 1 * 4 + 2 * 25 * 4 * 4 + 3 * 2 * 4) + \
        (25 * 4 * 8 + 2 * 25 * 8 * 8 + 3 * 2 * 8) + (8 * 7 + 7)
    assert net.num_parameters() == expect == s.total_params
    assert s.output_shape == (1, 7)
    y = net(np.zeros((2, 1, 12, 12), np.float32))
    assert y.shape == (2, 7)
    with pytest.raises(ValueError, match="odd"):
        search.block_net(kernel=4)


def test_mutation_changes_one_gene_to_a_neighbour():
    rng = np.random.default_rng(0)
    g = {"depth": 1, "width": 16, "kernel": 3}
    for _ in range(200):
        c = search.mutate(g, rng)
        diff = [k for k in g if c[k] != g[k]]
        assert len(diff) == 1
        k = diff[0]
        vals = search.SPACE[k]
        assert abs(vals.index(c[k]) - vals.index(g[k])) == 1
    with pytest.raises(ValueError, match="width must be one of"):
        search.mutate({"depth": 1, "width": 5, "kernel": 3}, rng)


def _fitness(g):
    # a known optimum inside the space: depth 2, width 12, kernel 5
    return {"score": -(abs(g["depth"] - 2) + abs(search.SPACE["width"].index(g["width"]) - 2)
                       + abs(g["kernel"] - 5) / 2)}


def test_evolution_finds_a_known_optimum_within_its_budget():
    calls = []

    def ev(g):
        calls.append(g)
        return _fitness(g)
    hist, best = search.evolve(ev, budget_evals=15, population=4, sample=2, seed=1,
                               log=lambda m: None)
    assert len(hist) == len(calls) == 15     # of the 36 genomes of the space
    assert len({tuple(c["genome"].values()) for c in hist}) == 15   # nothing trained twice
    assert best["genome"] == {"depth": 2, "width": 12, "kernel": 5}
    for c in hist[4:]:      # after the random start every child has a parent one step away
        assert c["parent"] is not None
        assert sum(c["genome"][k] != c["parent"][k] for k in c["genome"]) == 1
    again, _ = search.evolve(ev, budget_evals=15, population=4, sample=2, seed=1,
                             log=lambda m: None)
    assert [c["genome"] for c in again] == [c["genome"] for c in hist]     # seeded


def test_time_budget_and_budget_parsing():
    hist, _ = search.evolve(lambda g: (__import__("time").sleep(0.02), _fitness(g))[1],
                            budget_seconds=0.1, log=lambda m: None)
    assert 1 <= len(hist) <= 8
    assert search.parse_budget("8") == (8, None)
    assert search.parse_budget("90s") == (None, 90.0)
    assert search.parse_budget("2m") == (None, 120.0)
    for bad in ("0", "x", "-3s", ""):
        with pytest.raises(ValueError, match="budget"):
            search.parse_budget(bad)
    with pytest.raises(ValueError, match="exactly one"):
        search.evolve(_fitness, log=lambda m: None)


def test_search_cli(tmp_path, capsys):
    d = write_idx_dataset(str(tmp_path / "data"), n_train=300, n_test=10, size=8)
    out = str(tmp_path / "s")
    assert main(["search", "--budget", "3", "--data-dir", d, "--train-images", "200",
                 "--val-images", "100", "--population", "2", "--out", out,
                 "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "best: depth" in text and "block_net(" in text
    with open(os.path.join(out, "search.json")) as f:
        res = json.load(f)
    assert len(res["candidates"]) == 3 and res["val_images"] == 100
    best = max(c["result"]["val_acc"] for c in res["candidates"])
    assert res["best"]["result"]["val_acc"] == best
    g = res["best"]["genome"]
    net = search.block_net(**g, rng=0)
    assert net.num_parameters() == res["best"]["result"]["params"]
    assert main(["search", "--budget", "soon", "--data-dir", d]) == 2
    assert "budget must be" in capsys.readouterr().err
