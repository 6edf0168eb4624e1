"""The parser of every command, and :func:`main`."""

from __future__ import annotations

import argparse
import sys

from jaxcam import LINKS
from jaxcam.cli import _photos as photos
from jaxcam.cli import _tools as tools
from jaxcam.cli._common import WEIGHTS_HELP, compile_cache, fail

USAGE = """The jaxcam command line.

  jaxcam demo                          the bundled photo: every main method and a grid
  jaxcam explain PATH... [options]     photos and folders, in batches on every device
  jaxcam grid IMAGE --method a,b,c     methods (and layers) side by side in one figure
  jaxcam compare IMAGE                 exact vs closed-form Grad-CAM++ and Smooth Grad-CAM++
  jaxcam convert MODEL CKPT -o OUT     a torchvision checkpoint to a .msgpack (no torch)
  jaxcam models | layers MODEL | methods
  jaxcam bench [--suite quick|full]    the benchmark suite
  jaxcam study [--part P] [--quick]    the study (benchmarks/STUDY.md), from a clone

Errors are one line on stderr with exit status 2 (--debug shows the traceback). Compiled
programs are cached in the jaxcam cache folder ($JAXCAM_CACHE or ~/.cache/jaxcam), so a
second run does not compile again (--no-compile-cache turns that off).
"""

EXPLAIN_EPILOG = """examples:
  jaxcam explain photo.jpg                                  # Grad-CAM, bundled Lite0
  jaxcam explain photos/ --method grad_cam,grad_cam_pp:exact --top 3 --batch-size 32
  jaxcam explain photos/ --model resnet50 --weights resnet50-0676ba61.pth --layer layer3,layer4
  jaxcam explain photos/ --format both --out maps/ --resume  # go on after an interruption
  jaxcam explain photos/ --distributed                       # one process per host

Each photo gets an overlay on the original photo per (layer, method, class), optional raw
maps (.npy, at the model's input size) and one line of OUT/results.jsonl: path, model,
layer, method, class, name, probability, targets, top5, maps, seconds. A photo that cannot
be read gets {"path", "error"} and the run goes on. Exit status: 0, 1 when some photos
were skipped, 2 when nothing could be explained.

Several hosts: start one process per host with --distributed (jax.distributed.initialize
reads the cluster from SLURM, Open MPI or a TPU pod), or give --coordinator HOST:PORT
--num-processes N --process-id I. Each process explains every N-th photo on its own
devices and writes OUT/results-0000I-of-0000N.jsonl; --resume reads every shard."""


EVALUATE_EPILOG = """examples:
  jaxcam evaluate photos/                                  # Grad-CAM on the bundled Lite0
  jaxcam evaluate photos/ --method grad_cam,grad_cam_pp,grad_cam_pp:exact \\
      --metrics deletion,insertion,average_drop,road_combined --batch-size 16
  jaxcam evaluate photos/ --out scores/ --resume           # go on after an interruption

Each photo's maps (normalised to [0, 1] at the input size) are scored for its predicted
class (or --class) in one compiled call per batch, and the photo gets one line of
OUT/results.jsonl: path, model, layer, class, probability, metrics {method: {metric:
value}}, seconds. OUT/summary.json and OUT/summary.md hold each metric's mean with its 95 %
bootstrap interval over every photo in the results. Deletion and insertion follow
jaxcam.metrics (zeros and RISE's blur as substrates); the scores are softmax
probabilities. Exit status: 0, 1 when some photos were skipped, 2 when none was scored."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other jaxcam error."""

    def error(self, message):
        fail(f"{message} (see `{self.prog} --help`)")


def _model_options(p, *, layers: str = "target layer (default: the model's)") -> None:
    p.add_argument("--model", default="efficientnet_lite0", help="see `jaxcam models`")
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--layer", default=None, help=layers)


def _target_options(p, *, top: bool) -> None:
    p.add_argument("--class", dest="target", type=int, default=None,
                   help="class index to explain (default: the predicted class)")
    if top:
        p.add_argument("--top", type=int, default=1,
                       help="explain each photo's K most probable classes (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the methods that draw noise (default 0)")


def _method_options(p, default: str) -> None:
    p.add_argument("--method", default=default,
                   help="comma-separated methods, each with its options, e.g. "
                        "grad_cam,grad_cam_pp:exact,score_cam:top_n=32 (see `jaxcam methods "
                        f"NAME`; default {default})")
    p.add_argument("--link", default=None, choices=tuple(LINKS),
                   help="the score explained, for the methods that take one (default: "
                        "each method's own)")
    p.add_argument("--derivatives", default=None, choices=("exact", "approx"),
                   help="Grad-CAM++'s second and third derivatives: exact (autodiff) or the "
                        "closed form g^2, g^3 (default approx)")


def build_parser() -> argparse.ArgumentParser:
    from jaxcam import available_methods, batch

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument("--no-compile-cache", action="store_true",
                        help="do not read or write the persistent compilation cache")
    raw = argparse.RawDescriptionHelpFormatter

    def sub_parser(name, help, **kwargs):
        return sub.add_parser(name, help=help, description=help, parents=[common],
                              formatter_class=raw, **kwargs)

    parser = _Parser(prog="jaxcam", description=USAGE, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub_parser("demo", "explain the bundled cat photo with EfficientNet-Lite0's "
                              "real weights: every main method and a grid figure",
                      epilog="example:\n  jaxcam demo --out demo/")
    demo.add_argument("--out", default="jaxcam-demo", help="output folder (default ./jaxcam-demo)")
    demo.set_defaults(run=photos.demo)

    explain = sub_parser("explain", "explain photos and folders of photos in batches",
                         epilog=EXPLAIN_EPILOG)
    explain.add_argument("paths", nargs="+", metavar="PATH",
                         help="photos (PNG, JPEG, WebP, BMP, TIFF) and folders (recursive)")
    _model_options(explain, layers="target layer, or several: L1,L2 (default: the model's)")
    _method_options(explain, "grad_cam")
    _target_options(explain, top=True)
    explain.add_argument("--batch-size", type=int, default=8,
                         help="photos per compiled call, split over the devices (default 8)")
    explain.add_argument("--out", default="jaxcam-out", help="output folder (default "
                                                             "./jaxcam-out)")
    explain.add_argument("--format", default="png", choices=("png", "npy", "both"),
                         help="overlays (png), raw maps (npy) or both (default png)")
    explain.add_argument("--resume", action="store_true",
                         help="skip the photos already in OUT/results*.jsonl")
    explain.add_argument("--distributed", action="store_true",
                         help="call jax.distributed.initialize() and explain this process's "
                              "share of the photos")
    explain.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                         help="jax.distributed coordinator address (implies --distributed)")
    explain.add_argument("--num-processes", type=int, default=None)
    explain.add_argument("--process-id", type=int, default=None)
    explain.set_defaults(run=photos.explain)

    evaluate = sub_parser("evaluate", "score the maps of photos and folders: faithfulness "
                                      "metrics per photo (JSONL) and their means",
                          epilog=EVALUATE_EPILOG)
    evaluate.add_argument("paths", nargs="+", metavar="PATH",
                          help="photos (PNG, JPEG, WebP, BMP, TIFF) and folders (recursive)")
    _model_options(evaluate)
    _method_options(evaluate, "grad_cam")
    evaluate.add_argument("--metrics", default=",".join(batch.DEFAULT_METRICS),
                          help="comma-separated, of: " + ", ".join(batch.METRICS)
                               + f" (default {','.join(batch.DEFAULT_METRICS)})")
    evaluate.add_argument("--steps", type=int, default=20,
                          help="points of the deletion and insertion curves (default 20)")
    _target_options(evaluate, top=False)
    evaluate.add_argument("--batch-size", type=int, default=8,
                          help="photos per compiled call (default 8)")
    evaluate.add_argument("--out", default="jaxcam-eval",
                          help="output folder (default ./jaxcam-eval)")
    evaluate.add_argument("--resume", action="store_true",
                          help="skip the photos already in OUT/results.jsonl")
    evaluate.set_defaults(run=photos.evaluate)

    grid = sub_parser("grid", "one figure: methods (columns) and layers (rows) side by side",
                      epilog="examples:\n  jaxcam grid photo.jpg --method grad_cam,"
                             "grad_cam_pp,grad_cam_pp:exact,score_cam\n  jaxcam grid photo.jpg "
                             "--layer _blocks.10,_blocks.15,_swish --method grad_cam,layer_cam")
    grid.add_argument("image", help="a photo: PNG, JPEG, WebP, BMP or TIFF")
    _model_options(grid, layers="target layer, or several (rows): L1,L2")
    _method_options(grid, "grad_cam,grad_cam_pp,layer_cam")
    _target_options(grid, top=False)
    grid.add_argument("--out", default="jaxcam-out", help="output folder")
    grid.set_defaults(run=photos.grid)

    compare = sub_parser("compare", "exact versus closed-form Grad-CAM++ and Smooth "
                                    "Grad-CAM++ on a photo: maps, differences, statistics",
                         epilog="examples:\n  jaxcam compare photo.jpg --link softmax\n"
                                "  jaxcam compare photo.jpg --layer _blocks.15 --activation "
                                "gelu --link exp")
    compare.add_argument("image", help="a photo: PNG, JPEG, WebP, BMP or TIFF")
    _model_options(compare)
    compare.add_argument("--activation", default="relu",
                         choices=("relu", "gelu", "silu", "softplus"),
                         help="activation after the split (smooth ones: a study tool)")
    compare.add_argument("--link", default="softmax", choices=tuple(LINKS))
    _target_options(compare, top=False)
    compare.add_argument("--n-samples", type=int, default=8,
                         help="noisy copies of Smooth Grad-CAM++ (default 8)")
    compare.add_argument("--chunk-size", type=int, default=None,
                         help="directions per batch of the exact engines (memory)")
    compare.add_argument("--out", default="jaxcam-compare", help="output folder")
    compare.set_defaults(run=photos.compare)

    convert = sub_parser("convert", "convert a torchvision checkpoint to a jaxcam .msgpack "
                                    "(torch not needed)",
                         epilog="example:\n  jaxcam convert resnet50 resnet50-0676ba61.pth "
                                "-o resnet50.msgpack")
    convert.add_argument("model", help="zoo model name, e.g. resnet50 (see `jaxcam models`)")
    convert.add_argument("checkpoint", help="PyTorch checkpoint, e.g. resnet50-0676ba61.pth")
    convert.add_argument("-o", "--output", required=True, help="output .msgpack path")
    convert.set_defaults(run=tools.convert)

    bench = sub_parser("bench", "the benchmark suite (jaxcam.bench): every "
                                "method jit-compiled beside its baselines and the peers",
                       epilog="examples:\n  jaxcam bench --suite quick --out results.json\n"
                              "  jaxcam bench --models resnet50 --methods grad_cam,"
                              "grad_cam_pp:exact --batch-sizes 1,8,32")
    bench.add_argument("options", nargs=argparse.REMAINDER,
                       help="the suite's options (jaxcam bench --help)")
    bench.set_defaults(run=tools.bench)
    study = sub_parser("study", "the study, exact versus closed-form higher-order terms and "
                                "every method's faithfulness and localisation "
                                "(benchmarks/STUDY.md; from a clone's root)",
                       epilog="examples:\n  jaxcam study --part derivatives\n"
                              "  jaxcam study --quick --out /tmp/study")
    study.add_argument("options", nargs=argparse.REMAINDER,
                       help="the study's options (jaxcam study --help)")
    study.set_defaults(run=tools.study)
    train = sub_parser("train-shapes", "train the shapes networks (shapes-relu, shapes-smooth) "
                                        "on jaxcam.datasets.shapes and cache their weights",
                       epilog="examples:\n  jaxcam train-shapes\n  jaxcam train-shapes "
                              "--model shapes-relu --quick")
    train.add_argument("--model", default="shapes-relu,shapes-smooth",
                       help="comma-separated networks (default both)")
    train.add_argument("--quick", action="store_true",
                       help="a few hundred steps on 32 px images (for tests; cached apart)")
    train.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    train.add_argument("--force", action="store_true", help="train even when cached")
    train.set_defaults(run=tools.train_shapes)
    sub_parser("models", "list the model zoo").set_defaults(run=tools.list_models)
    layers = sub_parser("layers", "list a model's layers (the default marked)",
                        epilog="example:\n  jaxcam layers resnet50")
    layers.add_argument("model", help="zoo model name (see `jaxcam models`)")
    layers.set_defaults(run=tools.list_layers)
    methods = sub_parser("methods", "list the CAM methods: " + ", ".join(available_methods()))
    methods.add_argument("name", nargs="?", default=None,
                         help="one method: its options, defaults and help")
    methods.add_argument("--markdown", action="store_true",
                         help="print the README's Markdown tables: methods, then options")
    methods.set_defaults(run=tools.list_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["bench"], ["study"]):
        argv = [argv[0], "--", *argv[1:]]          # every option, --help too, goes on
    args = build_parser().parse_args(argv)
    try:
        if args.command not in ("models", "layers", "methods", "convert", "bench", "study"):
            compile_cache(not args.no_compile_cache)
        return args.run(args)
    except KeyboardInterrupt:
        print("jaxcam: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:                    # bad input: images, weights, paths, options
        if args.debug:
            raise
        if isinstance(e, (ValueError, OSError, TypeError)):
            fail(str(e) or type(e).__name__)
        fail(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")
