"""What a run shows and leaves behind besides its checkpoint: the progress
bar, the start and per-epoch log lines, ``metrics.json`` and the plots."""
from __future__ import annotations

import json
import os


class _Progress:
    """tqdm on a terminal, nothing per batch otherwise."""

    def __init__(self, total, desc, enabled):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="img", leave=False,
                                dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, n, loss):
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def start_line(cfg, data, threads, world_size=None) -> str:
    """The line a run starts with: model, data, optimizer, threads, seed."""
    ranks = "" if world_size is None else f"ranks={world_size}, "
    per = "" if world_size is None else " per rank"
    return (f"convcore train: {cfg.model} on {cfg.dataset} ({len(data.train_set)} train / "
            f"{len(data.test_set)} test images), {cfg.optimizer} lr={cfg.resolved_lr()}, "
            f"loss={cfg.loss}, batch={cfg.batch_size}, {ranks}threads{per}={threads}, "
            f"seed={cfg.seed}, device={cfg.device}")


def epoch_line(rec, epochs) -> str:
    """The line logged after each epoch, from its history record."""
    return (f"epoch {rec['epoch']:3d}/{epochs}  loss {rec['train_loss']:.4f}  "
            f"train acc {rec['train_acc'] * 100:6.2f}%  test acc {rec['test_acc'] * 100:6.2f}%  "
            f"{rec['images_per_s']:7.0f} img/s  {rec['seconds']:6.1f} s")


def interrupted_lines(what, epoch, history, ckpt_path, out, path) -> str:
    """What Ctrl-C or SIGTERM in epoch `epoch` (0-based) leaves, and how to go on."""
    if history and os.path.isfile(ckpt_path):
        return (f"\n{what} in epoch {epoch + 1}: the last complete epoch "
                f"({history[-1]['epoch']}) is in {ckpt_path}; continue with "
                f"convcore train --resume {out} (the interrupted weights are in {path})")
    return (f"\n{what} in epoch {epoch + 1}, before any epoch was complete: there is "
            f"nothing to resume, start the run again (the interrupted weights are in "
            f"{path})")


def conf_from(history, out):
    try:
        with open(os.path.join(out, "metrics.json")) as f:
            return json.load(f).get("confusion")
    except (OSError, ValueError):
        return None


def _write_metrics(out, m):
    from convcore.nn._io import write_text_atomic
    write_text_atomic(os.path.join(out, "metrics.json"), json.dumps(m, indent=1))


def _plots_safe(out, model, history, conf, train_set, test_it, log):
    try:
        from convcore import _plots
    except ImportError:
        log("matplotlib is not installed: no plots (pip install \"convcore[train]\")")
        return
    x0, _ = next(test_it.epoch(0))
    _plots.write_all(out, model, history, conf, list(train_set.classes), x0[0])
