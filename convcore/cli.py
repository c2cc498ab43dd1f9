"""The ``convcore`` command line: one function per subcommand.

    convcore summary vgg16 [--input 3,224,224] [--num-classes N]
    convcore info
"""
from __future__ import annotations

import argparse
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


# ------------------------------------------------------------------------ info
def add_info(sub):
    p = sub.add_parser("info", help="what this build runs on (threads, BLAS, OpenMP)")
    p.set_defaults(func=cmd_info)


def cmd_info(args):
    from convcore._info import show_config
    show_config()
    return 0


# ------------------------------------------------------------------------ main
def build_parser():
    parser = argparse.ArgumentParser(prog="convcore", description="convcore command line")
    sub = parser.add_subparsers(dest="command", required=True)
    add_summary(sub)
    add_info(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"convcore {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
