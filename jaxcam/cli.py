"""The ``jaxcam`` command line."""

from __future__ import annotations

import argparse
import sys


def _models(args) -> int:
    from jaxcam import models

    for name in models.available():
        info = models.info(name)
        weights = "bundled ImageNet weights" if info.pretrained else "weights: a torchvision .pth"
        print(f"{name:20s} default layer {info.default_layer:12s} "
              f"{len(models.layers(name)):3d} layers  {weights}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxcam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the model zoo").set_defaults(run=_models)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
