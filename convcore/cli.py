"""The ``convcore`` command line: one function per subcommand.

    convcore train [--model lenet5] [--dataset fashion-mnist] [--epochs 10] ...
    mpiexec -n 2 convcore train --distributed ...
    convcore evaluate CHECKPOINT [CHECKPOINT ...]
    convcore prune RUN [--amount 0.9] [--epochs 2] [--structured]
    convcore search [--budget 8|90s] [--dataset fashion-mnist]
    convcore summary vgg16 [--input 3,224,224] [--num-classes N] [--notes | --listing]
    convcore tune resnet18 [--input 8,3,224,224] [--out convcore-plan.json]
    convcore info

``python -m convcore ...`` runs the same.  User errors (bad options, missing
or malformed files) print one line and exit with status 2; Ctrl-C exits with
130 and SIGTERM during training with 143, both after saving the run's state.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main", "build_parser"]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in ``--help``, except the empty ones (None,
    False) and where the help text already says it."""

    def _get_help_string(self, action):
        h = action.help or ""
        if (action.default is None or action.default is False
                or action.default is argparse.SUPPRESS or "default" in h):
            return h
        return super()._get_help_string(action)


def _shape(text):
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W (e.g. 3,224,224), got {text!r}")
    if len(dims) not in (3, 4) or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W of positive ints, got {text!r}")
    return dims


# --------------------------------------------------------------------- summary
def add_summary(sub):
    p = sub.add_parser("summary", help="per-layer table of a model: shapes, activations, "
                                       "parameters, MACs", formatter_class=_Formatter)
    p.add_argument("model", help="lenet5, alexnet, vgg11/13/16/19, vgg-<A|A-LRN|B|C|D|E>, "
                                 "googlenet, resnet18/34/50, resnet20/32/44/56/110")
    p.add_argument("--input", type=_shape, default=None,
                   help="input shape C,H,W (default: the model's usual input)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the last layer (default: the model's own)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--notes", dest="style", action="store_const", const="notes",
                      default="table", help="the notes' form: memory and parameters "
                      "(no biases) per layer, then totals (VGG-16's table)")
    form.add_argument("--listing", dest="style", action="store_const", const="listing",
                      help="the notes' layer listing ([55x55x96] CONV1: 96 11x11 filters "
                      "at stride 4, pad 0 ...), as for AlexNet")
    p.set_defaults(func=cmd_summary)


_DEFAULT_INPUT = {"lenet5": (1, 28, 28), "alexnet": (3, 227, 227)}
_DEFAULT_INPUT.update({f"resnet{d}": (3, 32, 32) for d in (20, 32, 44, 56, 110)})


def cmd_summary(args):
    from convcore import models
    from convcore._summary import summary
    name = args.model.lower()
    kwargs = {"rng": 0}
    shape = args.input or _DEFAULT_INPUT.get(name, (3, 224, 224))
    kwargs["in_channels"] = shape[-3]
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    model = models.get_model(name, **kwargs)
    print(summary(model, shape, style=getattr(args, "style", "table")))
    return 0


# ------------------------------------------------------------------------ tune
def add_tune(sub):
    p = sub.add_parser("tune", help="measure the fastest convolution strategy for each "
                                    "layer of a model and save it as a plan",
                       formatter_class=_Formatter)
    p.add_argument("model", help="a model name, as for summary")
    p.add_argument("--input", type=_shape, default=None,
                   help="input shape C,H,W or N,C,H,W (default: the model's usual input, "
                        "batch 1)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per strategy (default 3)")
    p.add_argument("--forward-only", action="store_true", help="do not tune the backward pass")
    p.add_argument("--out", default="convcore-plan.json",
                   help="plan file to write (default convcore-plan.json; load it with "
                        "CONVCORE_PLAN=FILE or convcore.load_plan)")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args):
    from convcore._tune import save_plan, tune
    name = args.model.lower()
    shape = args.input or _DEFAULT_INPUT.get(name, (3, 224, 224))
    if args.repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {args.repeat}")
    entries = tune(name, shape, dtype=args.dtype, repeat=args.repeat,
                   backward=not args.forward_only, verbose=True)
    save_plan(args.out)
    print(f"{len(entries)} convolution geometries tuned; plan written to {args.out}")
    return 0


# ------------------------------------------------------------------------ info
def add_info(sub):
    p = sub.add_parser("info", help="what this build runs on (threads, BLAS, OpenMP)",
                       formatter_class=_Formatter)
    p.set_defaults(func=cmd_info)


def cmd_info(args):
    from convcore._info import show_config
    show_config()
    return 0


def _add_train(sub, explicit_only=False):
    from convcore.train import ACTIVATIONS, LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model (default: LeNet-5 on Fashion-MNIST)",
                       formatter_class=_Formatter,
                       description="Train a convcore model. With no arguments: LeNet-5 on "
                                   "Fashion-MNIST for 10 epochs, SGD with momentum. "
                                   "--resume RUN continues RUN in its own directory with "
                                   "its own settings; options given with it override them "
                                   "(e.g. --epochs 20 to extend the run).")
    p.add_argument("--model", default=d.model, help="a model of convcore.models (lenet5, "
                   "cnn_bn, vgg16, resnet18, ...) or module:function for your own")
    p.add_argument("--activation", default=None, choices=ACTIVATIONS,
                   help="activation of lenet5, cnn_bn and cnn_bn_wide (default: relu)")
    p.add_argument("--dataset", default=d.dataset, choices=("fashion-mnist", "mnist",
                                                             "cifar10"), help="dataset")
    p.add_argument("--data-dir", default=None, help="directory of the dataset files "
                   "(default: $CONVCORE_DATA, then /usr/share/datasets/<dataset>)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="number of epochs (with --resume: the new total)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.01 for sgd, 0.001 for adam/adamw)")
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="optimizer")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="L2 penalty (decoupled for adamw)")
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES,
                   help="learning-rate schedule over the epochs")
    p.add_argument("--step-size", type=int, default=d.step_size,
                   help="epochs between x0.1 steps of --schedule step")
    p.add_argument("--loss", default=d.loss, choices=LOSSES,
                   help="ce: cross-entropy; focal; cb-*: class-balanced weights")
    p.add_argument("--gamma", type=float, default=d.gamma, help="focal loss gamma")
    p.add_argument("--beta", type=float, default=d.beta,
                   help="class-balanced beta (effective number of samples)")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                   help="cross-entropy label smoothing")
    p.add_argument("--imbalance-ratio", type=float, default=d.imbalance_ratio,
                   help="subsample the training set to a long-tailed profile whose "
                        "largest class is this many times the smallest")
    aug = p.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", nargs="?", const=True, default=None,
                     choices=("pca",), help="random crop + flip (default: on for cifar10); "
                     "--augment pca adds AlexNet's PCA colour (lighting) shift, for colour "
                     "datasets")
    aug.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of convcore's kernels, 1 to 1024 (default: "
                        "$CONVCORE_NUM_THREADS, else all cores)")
    p.add_argument("--blas-threads", type=int, default=d.blas_threads,
                   help="limit NumPy's BLAS threads during training (convcore's own "
                        "layers never use them; default: left as they are)")
    p.add_argument("--device", default=d.device, help="cpu or cuda")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the initial weights, batch order and augmentation")
    p.add_argument("--out", default=d.out, help="output directory")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="continue a run (its directory or checkpoint file) in its own "
                        "directory with its own settings; options given here override them")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training over MPI, one process per rank: "
                        "mpiexec -n 2 convcore train --distributed ... "
                        "(needs pip install \"convcore[mpi]\")")
    p.add_argument("--sync-bn", action="store_true",
                   help="with --distributed: BatchNorm statistics over the global batch "
                        "(default: per rank)")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --distributed: abort the job when one rank waits this long "
                        "for the others (default 300)")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-test", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)
    if explicit_only:                # a parser that returns only what was given
        for a in p._actions:
            a.default = argparse.SUPPRESS
        p._defaults.clear()
    return p


def _explicit_train_options(argv) -> set:
    """The ``convcore train`` options given on the command line (not defaults)."""
    p = argparse.ArgumentParser(prog="convcore")
    sub = p.add_subparsers(dest="command")
    _add_train(sub, explicit_only=True)
    return set(vars(p.parse_args(argv)).keys()) - {"command"}


def cmd_train(args) -> int:
    from convcore.train import TrainConfig, fit
    from convcore import distributed as dist
    from convcore.distributed.runtime import _launcher_world_size
    n = _launcher_world_size()
    if not args.distributed:
        if n is not None and n > 1 and dist.launched_by_mpi():
            raise RuntimeError(f"started by an MPI launcher with {n} processes but without "
                               "--distributed: each would train alone and write the same "
                               "files. Add --distributed (or run one process)")
        if args.sync_bn or args.dist_timeout is not None:
            raise ValueError("--sync-bn and --dist-timeout need --distributed")
    cfg = TrainConfig(model=args.model, activation=args.activation, dataset=args.dataset,
                      data_dir=args.data_dir,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      optimizer=args.optimizer, momentum=args.momentum,
                      nesterov=args.nesterov, weight_decay=args.weight_decay,
                      schedule=args.schedule, step_size=args.step_size, loss=args.loss,
                      gamma=args.gamma, beta=args.beta, label_smoothing=args.label_smoothing,
                      imbalance_ratio=args.imbalance_ratio, augment=args.augment,
                      threads=args.threads, blas_threads=args.blas_threads,
                      device=args.device, seed=args.seed,
                      out=args.out, limit_train=args.limit_train, limit_test=args.limit_test,
                      distributed=args.distributed, sync_bn=args.sync_bn,
                      dist_timeout=args.dist_timeout)
    overrides = None
    if args.resume:
        # the run's own settings, except what this command line gives
        given = getattr(args, "_explicit", None)
        if given is None:
            given = set(vars(args))
        overrides = {k: getattr(cfg, k) for k in given if k in vars(cfg)}
        for k in ("distributed", "sync_bn", "dist_timeout"):
            overrides[k] = getattr(cfg, k)
    from convcore.train import Terminated
    try:
        res = fit(cfg, resume=args.resume, overrides=overrides)
    except Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    out = res.get("config", {}).get("out", cfg.out)
    if res.get("history") and dist.is_main_process():
        h = res["history"][-1]
        print(f"done: test accuracy {h['test_acc'] * 100:.2f}% after {h['epoch']} epochs; "
              f"outputs in {out}")
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix "
                                        "of a checkpoint on its test set; with several, "
                                        "of their ensemble", formatter_class=_Formatter)
    p.add_argument("checkpoint", nargs="+", help="checkpoint file or run directory; several "
                   "form an ensemble (mean of their class probabilities)")
    p.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                   help="the custom model a run was trained with (a checkpoint names only "
                        "models of convcore.models by itself)")
    p.add_argument("--data-dir", default=None, help="directory of the dataset files "
                   "(default: the run's own)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of convcore's kernels, 1 to 1024")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the run's own)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--limit-test", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from convcore.train import evaluate_checkpoint, format_report
    if len(args.checkpoint) > 1:
        from convcore.ensemble import evaluate_ensemble, format_ensemble_report
        res = evaluate_ensemble(args.checkpoint, data_dir=args.data_dir, threads=args.threads,
                                device=args.device, limit_test=args.limit_test,
                                model=args.model)
        print(json.dumps(res, indent=1) if args.json else format_ensemble_report(res))
        return 0
    res = evaluate_checkpoint(args.checkpoint[0], data_dir=args.data_dir, threads=args.threads,
                              device=args.device, limit_test=args.limit_test,
                              model=args.model)
    print(json.dumps(res, indent=1) if args.json else format_report(res))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from convcore._version import __version__
    p = argparse.ArgumentParser(prog="convcore", description="convcore: CNNs from a "
                                "hand-written C core.", formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"convcore {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    add_summary(sub)
    add_tune(sub)
    add_info(sub)
    from convcore.prune import add_cli as _add_prune
    from convcore.search import add_cli as _add_search
    _add_prune(sub)
    _add_search(sub)
    return p


def main(argv=None) -> int:
    """Run the command line; return the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (``convcore summary vgg16 | head``): stop quietly,
        # and keep the interpreter's final flush from complaining again
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1


def _main(argv) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command == "train":
        args._explicit = _explicit_train_options(argv)
    from convcore.data import DatasetNotFoundError
    try:
        rc = args.func(args)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        raise
    except KeyboardInterrupt:
        return 130
    except DatasetNotFoundError as e:
        return _fail(2, f"convcore: {e}")
    except (ValueError, TypeError, OSError) as e:
        # bad options, missing, unreadable or malformed files: one line
        msg = " ".join(str(e).split()) if isinstance(e, OSError) else str(e)
        return _fail(2, f"convcore {args.command}: error: {msg}")
    except (RuntimeError, FloatingPointError) as e:
        return _fail(1, f"convcore {args.command}: error: {e}")


def _fail(code, message):
    """Print the error; in a distributed job, end every rank (the others would
    otherwise wait for this one in their next collective)."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if len(lines) > 1:            # one line: a multi-line reason joined with "; "
        message = lines[0] + " " + "; ".join(lines[1:])
    from convcore import distributed as dist
    if dist.is_initialized() and dist.world_size() > 1:
        dist.abort(code, f"{message}  [rank {dist.rank()} of {dist.world_size()}; "
                         "aborting the job]")
    print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
