"""``jaxcam bench [options]`` (from a clone also ``python -m benchmarks run``): runs a
suite, or the cases the options give, or one part of a suite, and writes its JSON
document and Markdown table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jaxcam.bench import suite as suite_module
from jaxcam.bench.cases import SUITES, make_cases
from jaxcam.bench.parts import (write_atomic, add_part, parse_part, split_parts,
                                write_results)
from jaxcam.bench.suite import markdown, run

def main(argv: list[str] | None = None, prog: str = "jaxcam bench") -> int:
    """Runs the suite (or the cases the options give) and writes its JSON document and
    Markdown table: ``jaxcam bench [options]``."""
    parser = argparse.ArgumentParser(prog=prog, description=suite_module.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p = parser
    p.add_argument("--suite", choices=sorted(SUITES), default=None)
    p.add_argument("--models", default=None, help="e.g. resnet18,resnet50")
    p.add_argument("--methods", default=None, help="e.g. grad_cam,grad_cam_pp:exact")
    p.add_argument("--batch-sizes", default=None, help="e.g. 1,8,32")
    p.add_argument("--size", type=int, default=None, help="input size (default: the suite's)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--part", default=None,
                   help="N/M: run the N-th of M parts of the suite (of about equal time) and "
                        "add its rows to --out, which then holds every finished part")
    p.add_argument("--list-parts", action="store_true",
                   help="print the cases of each part (with --part's M) and exit")
    p.add_argument("--results", default=None,
                   help="a Markdown file (benchmarks/RESULTS.md) whose section for the suite "
                        "is rebuilt from --out's parts document")
    p.add_argument("--out", default="benchmark-results.json",
                   help="the JSON document; the Markdown table goes beside it (.md)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    cases = SUITES[args.suite or "quick"]()
    if args.models or args.methods or args.batch_sizes or args.size:
        if args.part:
            parser.error("--part splits a whole suite; it cannot take --models, --methods, "
                         "--batch-sizes or --size")
        models = args.models.split(",") if args.models else sorted({c.model for c in cases})
        methods = (args.methods.split(",") if args.methods
                   else list(dict.fromkeys(c.method for c in cases)))
        sizes = ([int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes
                 else sorted({c.batch_size for c in cases}))
        size = args.size or cases[0].size
        cases = make_cases(models, methods, sizes, size)
    out = Path(args.out)
    part = None
    if args.part:
        try:
            part = parse_part(args.part)
            groups = split_parts(cases, part[1], args.repeats)
        except ValueError as e:
            parser.error(str(e))
        if args.list_parts:
            for k, group in enumerate(groups, 1):
                print(f"part {k}/{part[1]}: " + ", ".join(
                    f"{c.model} {c.method} b{c.batch_size}" for c in group))
            return 0
        cases = groups[part[0] - 1]
    elif args.results and not args.list_parts:
        if not out.exists():
            parser.error(f"--results rebuilds from the parts document --out {out}, which "
                         "does not exist: run the parts first")
        write_results(json.loads(out.read_text()), Path(args.results))
        print(f"rebuilt {args.results} from {out}")
        return 0
    t0 = time.perf_counter()
    document = run(cases, repeats=args.repeats, peers=not args.no_peers,
                   suite=args.suite or "custom")
    document["seconds"] = time.perf_counter() - t0
    if part is not None:
        command = " ".join(["python -m benchmarks run", *(argv if argv is not None
                                                          else sys.argv[1:])])
        try:
            whole = add_part(out, document, part, command)
        except ValueError as e:
            parser.error(str(e))
        write_atomic(out.with_suffix(".md"), markdown(whole))
        if args.results:
            write_results(whole, Path(args.results))
        print(f"part {part[0]}/{part[1]}: {len(document['rows'])} rows in "
              f"{document['seconds']:.0f} s; {out} holds parts "
              f"{', '.join(sorted(whole['parts'], key=int))} of {part[1]}")
        return 0
    write_atomic(out, json.dumps(document, indent=2) + "\n")
    write_atomic(out.with_suffix(".md"), markdown(document))
    print(f"wrote {out} and {out.with_suffix('.md')} ({len(document['rows'])} rows, "
          f"{document['seconds']:.0f} s)")
    return 0
