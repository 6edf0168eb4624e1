"""Command line: ``python -m pretrained_ports convert MODEL CHECKPOINT -o OUT.msgpack``."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrained_ports",
                                     description="Convert PyTorch checkpoints for jaxcam.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert a PyTorch checkpoint to a .msgpack file")
    conv.add_argument("model", help="zoo model name, e.g. resnet50 (see `jaxcam models`)")
    conv.add_argument("checkpoint", help="PyTorch checkpoint, e.g. resnet50-0676ba61.pth")
    conv.add_argument("-o", "--output", required=True, help="output .msgpack path")
    args = parser.parse_args(argv)

    from pretrained_ports import CheckpointError, ConversionError, convert_checkpoint, save_variables

    try:
        variables = convert_checkpoint(args.model, args.checkpoint)
        path = save_variables(args.output, variables, model=args.model)
    except (CheckpointError, ConversionError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import jax

    count = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(variables))
    print(f"converted {args.checkpoint} -> {path} ({args.model}, {count:,} values)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
