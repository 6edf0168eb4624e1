"""Command line: ``python -m pretrained_ports convert MODEL CHECKPOINT -o OUT.msgpack``.

Every failure is one line on stderr (``error: ...``) and exit status 2, never a
traceback; the output file is written atomically, so a failure leaves none behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

EPILOG = """\
examples:
  python -m pretrained_ports convert resnet50 resnet50-0676ba61.pth -o resnet50.msgpack
  python -m pretrained_ports convert vgg16 ~/Downloads/vgg16-397923af.pth -o vgg16.msgpack

then, in Python:
  split = jaxcam.models.load("resnet50", weights="resnet50.msgpack")

(load also accepts the .pth directly: it converts it once and caches the result.)
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line like every other error of the command."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _one_line(error: BaseException) -> str:
    """A multi-line message (a conversion report) joined into one line."""
    first, *rest = [line.strip() for line in str(error).splitlines() if line.strip()] or [
        type(error).__name__]
    return first if not rest else f"{first.rstrip(':')}: {'; '.join(rest)}"


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m pretrained_ports", epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Convert PyTorch checkpoints for jaxcam (torch not needed).")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert a PyTorch checkpoint to a .msgpack file",
                          description="Convert a PyTorch checkpoint of a zoo model to a "
                                      "jaxcam .msgpack file.",
                          epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    conv.add_argument("model", help="zoo model name, e.g. resnet50 (see `jaxcam models`)")
    conv.add_argument("checkpoint", help="PyTorch checkpoint, e.g. resnet50-0676ba61.pth")
    conv.add_argument("-o", "--output", required=True, help="output .msgpack path")
    args = parser.parse_args(argv)

    cannot_write = f"cannot write {args.output}: {{}}; choose another -o"
    problem = _same_file(Path(args.checkpoint), Path(args.output)) or _unwritable(
        Path(args.output))
    if problem:  # seen before importing jax and converting, which take seconds
        return _fail(cannot_write.format(problem))

    from jaxcam.models import convert_checkpoint, save_variables  # the zoo's shapes
    from pretrained_ports import CheckpointError, ConversionError

    try:
        variables = convert_checkpoint(args.model, args.checkpoint)
    except (CheckpointError, ConversionError, ValueError, OSError, MemoryError) as e:
        return _fail(_one_line(e))
    try:
        path = save_variables(args.output, variables, model=args.model)
    except OSError as e:  # the write is atomic: nothing is left at or beside the output
        return _fail(cannot_write.format(_why_unwritable(e)))
    except (CheckpointError, ConversionError) as e:
        return _fail(_one_line(e))
    import jax

    count = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(variables))
    print(f"converted {args.checkpoint} -> {path} ({args.model}, {count:,} values)")
    return 0


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _same_file(source: Path, output: Path) -> str | None:
    """Why writing ``output`` would destroy ``source`` (the same file, or a link to it)."""
    try:
        same = output.exists() and source.exists() and os.path.samefile(source, output)
    except OSError:
        same = False
    if same or source.resolve() == output.resolve():
        return f"it is the checkpoint being converted ({source}), which would be replaced"
    return None


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file, if that can be seen without writing."""
    if path.is_dir():
        return "a directory is in the way"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"no permission to write in {parent}"
    return None


def _why_unwritable(e: OSError) -> str:
    if isinstance(e, IsADirectoryError):
        return "a directory is in the way"
    if isinstance(e, (NotADirectoryError, FileExistsError)):  # FileExists: mkdir of a file
        return f"{e.filename or 'a parent'} is a file, not a directory"
    return os.strerror(e.errno) if e.errno else str(e)


if __name__ == "__main__":
    sys.exit(main())
