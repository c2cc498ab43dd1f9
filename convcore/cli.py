"""The ``convcore`` command line: one function per subcommand.

    convcore train [--model lenet5] [--dataset fashion-mnist] [--epochs 10] ...
    mpiexec -n 2 convcore train --distributed ...
    convcore evaluate CHECKPOINT
    convcore summary vgg16 [--input 3,224,224] [--num-classes N]
    convcore tune resnet18 [--input 8,3,224,224] [--out convcore-plan.json]
    convcore info
"""
from __future__ import annotations

import argparse
import json
import sys


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
                                       "parameters, MACs")
    p.add_argument("model", help="lenet5, alexnet, vgg11/13/16/19, vgg-<A|A-LRN|B|C|D|E>, "
                                 "googlenet, resnet18/34/50")
    p.add_argument("--input", type=_shape, default=None,
                   help="input shape C,H,W (default: the model's usual input)")
    p.add_argument("--num-classes", type=int, default=None)
    p.set_defaults(func=cmd_summary)


_DEFAULT_INPUT = {"lenet5": (1, 28, 28), "alexnet": (3, 227, 227)}


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
    print(summary(model, shape))
    return 0


# ------------------------------------------------------------------------ tune
def add_tune(sub):
    p = sub.add_parser("tune", help="measure the fastest convolution strategy for each "
                                    "layer of a model and save it as a plan")
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
    p = sub.add_parser("info", help="what this build runs on (threads, BLAS, OpenMP)")
    p.set_defaults(func=cmd_info)


def cmd_info(args):
    from convcore._info import show_config
    show_config()
    return 0


def _add_train(sub):
    from convcore.train import LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model (default: LeNet-5 on Fashion-MNIST)",
                       description="Train a convcore model. With no arguments: LeNet-5 on "
                                   "Fashion-MNIST for 10 epochs, SGD with momentum.")
    p.add_argument("--model", default=d.model, help="a function of convcore.models "
                   "(default %(default)s)")
    p.add_argument("--dataset", default=d.dataset, choices=("fashion-mnist", "mnist",
                                                             "cifar10"))
    p.add_argument("--data-dir", default=None, help="directory of the dataset files "
                   "(default: $CONVCORE_DATA, then /usr/share/datasets/<dataset>)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default 0.01 for sgd, 0.001 for adam/adamw)")
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", default=d.schedule, choices=SCHEDULES,
                   help="learning-rate schedule over the epochs (default %(default)s)")
    p.add_argument("--step-size", type=int, default=d.step_size,
                   help="epochs between x0.1 steps of --schedule step")
    p.add_argument("--loss", default=d.loss, choices=LOSSES,
                   help="ce: cross-entropy; focal; cb-*: class-balanced weights")
    p.add_argument("--gamma", type=float, default=d.gamma, help="focal loss gamma")
    p.add_argument("--beta", type=float, default=d.beta,
                   help="class-balanced beta (effective number of samples)")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--imbalance-ratio", type=float, default=d.imbalance_ratio,
                   help="subsample the training set to a long-tailed profile whose "
                        "largest class is this many times the smallest")
    aug = p.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None,
                     help="random crop + flip (default: on for cifar10)")
    aug.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of convcore's kernels (default: all cores)")
    p.add_argument("--blas-threads", type=int, default=d.blas_threads,
                   help="threads of NumPy's BLAS in linear layers (default %(default)s)")
    p.add_argument("--device", default=d.device, help="cpu or cuda")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=d.out, help="output directory (default %(default)s)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue a run from its checkpoint (file or --out directory)")
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


def cmd_train(args) -> int:
    from convcore.train import TrainConfig, fit
    from convcore import distributed as dist
    n = dist._launcher_world_size()
    if not args.distributed:
        if n is not None and n > 1 and dist.launched_by_mpi():
            raise RuntimeError(f"started by an MPI launcher with {n} processes but without "
                               "--distributed: each would train alone and write the same "
                               "files. Add --distributed (or run one process)")
        if args.sync_bn or args.dist_timeout is not None:
            raise ValueError("--sync-bn and --dist-timeout need --distributed")
    cfg = TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
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
    try:
        res = fit(cfg, resume=args.resume)
    except KeyboardInterrupt:
        return 130
    if res.get("history") and dist.is_main_process():
        h = res["history"][-1]
        print(f"done: test accuracy {h['test_acc'] * 100:.2f}% after {h['epoch']} epochs; "
              f"outputs in {cfg.out}")
    return 0


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix "
                                        "of a checkpoint on its test set")
    p.add_argument("checkpoint", help="checkpoint file or run directory")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--limit-test", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from convcore.train import evaluate_checkpoint, format_report
    res = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, threads=args.threads,
                              device=args.device, limit_test=args.limit_test)
    print(json.dumps(res, indent=1) if args.json else format_report(res))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convcore", description="convcore: CNNs from a "
                                "hand-written C core.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    add_summary(sub)
    add_tune(sub)
    add_info(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from convcore.data import DatasetNotFoundError
    try:
        return args.func(args)
    except DatasetNotFoundError as e:
        return _fail(2, f"convcore: {e}")
    except (ValueError, TypeError, FileNotFoundError) as e:
        return _fail(2, f"convcore {args.command}: error: {e}")
    except (RuntimeError, FloatingPointError) as e:
        return _fail(1, f"convcore {args.command}: error: {e}")


def _fail(code, message):
    """Print the error; in a distributed job, end every rank (the others would
    otherwise wait for this one in their next collective)."""
    from convcore import distributed as dist
    if dist.is_initialized() and dist.world_size() > 1:
        dist.abort(code, f"{message}  [rank {dist.rank()} of {dist.world_size()}; "
                         "aborting the job]")
    print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
