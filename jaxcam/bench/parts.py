"""The full suite in parts: ``--part N/M`` runs the N-th of M groups of cases of about
equal estimated time and adds its rows to one document; :func:`write_results` rebuilds
the suite's section of RESULTS.md from it."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from jaxcam.bench.cases import Case, effective_options, case_peers
from jaxcam.bench.suite import SCHEMA_VERSION, markdown, validate

# Rough seconds of one image's forward at 224 px on 2 CPU cores, and the target layer's
# channels, to balance the parts.
_FORWARD_S = {"resnet18": 0.035, "resnet50": 0.1, "vgg16": 0.3}
_CHANNELS = {"resnet18": 512, "resnet50": 2048, "vgg16": 512}


def estimate_s(case: Case, repeats: int) -> float:
    """A rough estimate of the case's seconds (its method, floor and peers) in forwards
    of one image, only to balance the parts of a suite; never reported."""
    options = effective_options(case)
    name = case.method.partition(":")[0]
    if name == "smooth_grad_cam_pp":
        mine, floor, peer = 3 * options.get("n_samples", 25), 1, 3 * options.get("n_samples", 25)
    elif name in ("score_cam", "ablation_cam"):
        channels = _CHANNELS.get(case.model, 512)
        mine, floor, peer = (channels, 0, channels) if name == "score_cam" else (6, 1, 0)
    else:
        mine, floor, peer = (4 if "exact" in case.method else 1.2), 1, 2
    calls = (case.repeats or repeats) + 4
    work = mine + floor + peer * len(case_peers(case))
    per_image = _FORWARD_S.get(case.model, 0.1) * (case.size / 224) ** 2
    return 5.0 + per_image * case.batch_size * work * calls


def split_parts(cases: list[Case], parts: int, repeats: int) -> list[list[Case]]:
    """``cases`` in ``parts`` contiguous groups of about equal estimated time (cases of
    one model stay together where they can, so a part loads few models)."""
    if not 1 <= parts <= len(cases):
        raise ValueError(f"the suite has {len(cases)} cases: --part N/M needs 1 <= M <= "
                         f"{len(cases)}, got M = {parts}")
    cost = [estimate_s(c, repeats) for c in cases]
    total, out, current, spent = sum(cost), [], [], 0.0
    for i, (case, c) in enumerate(zip(cases, cost)):
        left = len(cases) - i                      # cases not yet placed, this one included
        need = parts - len(out) - 1                # groups still to open after this one
        if current and (left <= need or spent + c / 2 > total * (len(out) + 1) / parts):
            out.append(current)
            current = []
        current.append(case)
        spent += c
    out.append(current)
    return out


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file beside it, so that an
    interrupted run never leaves half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def parse_part(text: str) -> tuple[int, int]:
    """``"N/M"`` -> (N, M) with 1 <= N <= M."""
    n, sep, m = text.partition("/")
    if not (sep and n.isdigit() and m.isdigit() and 1 <= int(n) <= int(m)):
        raise ValueError(f"--part must be N/M with 1 <= N <= M, e.g. 2/6; got {text!r}")
    return int(n), int(m)


def add_part(path: Path, document: dict, part: tuple[int, int], command: str) -> dict:
    """Adds (or replaces) part N of M in the parts document at ``path`` and returns it.

    The parts document is the suite's document (``rows`` are every finished part's rows,
    in part order; ``environment`` the latest part's) plus ``parts``: per part its
    ``rows``, ``seconds``, ``environment`` and ``command``. Parts of another suite or
    another M are refused (a different split of the cases)."""
    n, m = part
    if path.exists():
        whole = json.loads(path.read_text())
        if whole.get("suite") != document["suite"] or whole.get("part_count") != m:
            raise ValueError(f"{path} holds parts of suite {whole.get('suite')!r} split in "
                             f"{whole.get('part_count')}, not {document['suite']!r} in {m}: "
                             "pass another --out")
    else:
        whole = {"schema": SCHEMA_VERSION, "suite": document["suite"], "part_count": m,
                 "parts": {}}
    whole["parts"][str(n)] = {"rows": document["rows"], "seconds": document["seconds"],
                              "environment": document["environment"], "command": command}
    done = sorted(whole["parts"], key=int)
    whole["rows"] = [r for k in done for r in whole["parts"][k]["rows"]]
    whole["environment"] = document["environment"]
    validate(whole)
    write_atomic(path, json.dumps(whole, indent=2) + "\n")
    return whole


def _summary(document: dict) -> list[str]:
    """The suite's ratios, summarised: each method's cost over its floor, and each peer's
    time over jaxcam's (the target: jaxcam at most half of pytorch-grad-cam's time)."""
    rows = document["rows"]
    lines = []
    floors: dict = {}
    for r in rows:
        if r["library"] == "jaxcam":
            floors.setdefault(r["baseline"]["kind"], []).append(r["baseline"]["ratio"])
    for kind, ratios in floors.items():
        lines.append(f"- jaxcam over its floor ({kind}): {min(ratios):.2f}-{max(ratios):.2f} x "
                     f"over {len(ratios)} rows.")
    for library in sorted({r["library"] for r in rows} - {"jaxcam"}):
        mine = [r for r in rows if r["library"] == library]
        ratios = [r["baseline"]["ratio"] for r in mine]
        agree = [r["agreement"] for r in mine]
        lines.append(f"- {library} over jaxcam: {min(ratios):.2f}-{max(ratios):.2f} x "
                     f"(median {statistics.median(ratios):.2f}) over {len(ratios)} rows; "
                     f"agreement {min(agree):.3f}-{max(agree):.3f}.")
    misses = [r for r in rows if r["library"] == "pytorch_grad_cam"
              and r["baseline"]["ratio"] < 2.0]
    for r in misses:
        lines.append(f"- Miss: {r['method']} at batch {r['batch_size']} ({r['model']}): "
                     f"pytorch-grad-cam takes {r['baseline']['ratio']:.2f} x jaxcam's time, "
                     "below the 2 x the target asks.")
    return lines


def results_section(whole: dict) -> str:
    """RESULTS.md's section for a parts document: machine, commands, parts, summary and
    the table of every row."""
    m = whole["part_count"]
    missing = [str(k) for k in range(1, m + 1) if str(k) not in whole["parts"]]
    lines = [f"## The benchmark suite, {whole['suite']} "
             f"(`python -m benchmarks run --suite {whole['suite']} --part N/{m}`)", ""]
    for k in sorted(whole["parts"], key=int):
        part = whole["parts"][k]
        env = part["environment"]
        lines.append(f"- part {k}/{m}: {len(part['rows'])} rows, {part['seconds']:.0f} s, "
                     f"{env['device']} ({env['platform']}, {env['cpu_count']} cores), commit "
                     f"{str(env['commit'])[:10]}: `{part['command']}`")
    if missing:
        lines.append(f"- not run yet: part {', '.join(missing)} of {m}")
    lines += ["", *_summary(whole), "", markdown(whole)]
    return "\n".join(lines)


def write_results(whole: dict, results: Path) -> None:
    """Rewrites the section of ``results`` between ``<!-- suite: NAME -->`` and
    ``<!-- /suite: NAME -->`` (appended at the end when absent)."""
    begin, end = f"<!-- suite: {whole['suite']} -->", f"<!-- /suite: {whole['suite']} -->"
    text = results.read_text() if results.exists() else ""
    block = f"{begin}\n{results_section(whole)}\n{end}"
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        text = head + block + rest.partition(end)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_atomic(results, text)
