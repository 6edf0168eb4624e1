"""STUDY.md and its figures, from the study's per-image records alone."""

from __future__ import annotations

import numpy as np

from benchmarks.study import derivatives, scoring, stats

METRICS = {**scoring.LOCALISATION, **scoring.FAITHFULNESS}     # name -> higher is better
PROBABILITY_BINS = (0.0, 0.5, 0.9, 0.99, 0.999, 1.0)


VERDICTS = {"first better": "exact better", "second better": "closed form better"}


def grouped(records: list[dict], *keys: str) -> dict[tuple, list]:
    """The records by the values of ``keys``, in first-seen order."""
    groups: dict[tuple, list] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def paired_metrics(records: list[dict]) -> dict[tuple, dict]:
    """Per (network, method, link): ``{metric: stats.paired(exact, closed form)}``, every
    metric's direction taken into account; computed once for the findings and tables."""
    return {key: {metric: stats.paired([r["exact"][metric] for r in rs],
                                       [r["approx"][metric] for r in rs],
                                       higher_is_better=higher)
                  for metric, higher in METRICS.items()}
            for key, rs in grouped(records, "network", "method", "link").items()}


def _fmt(v: dict, percent: bool = False) -> str:
    if percent:
        return f"{v['mean']:+.2%} ({v['low']:+.2%}, {v['high']:+.2%})"
    return f"{v['mean']:+.4f} ({v['low']:+.4f}, {v['high']:+.4f})"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


def derivatives_section(records: list[dict], paired: dict[tuple, dict]) -> list[str]:
    """Exact versus closed form, per network, method and link: the maps' agreement, the
    weights' changes, and the paired difference of every metric (``paired``:
    :func:`paired_metrics` of the records)."""
    layer = records[0].get("layer", "act4")
    lines = ["## Exact versus closed-form higher-order terms", "",
             f"Each held-out single-object image's map for its true class at `{layer}` (the "
             "head: the network's activation after it, global average pooling, the linear "
             "classifier), exact D2, D3 against the closed form g^2, g^3; Smooth "
             f"Grad-CAM++ with {records[0].get('n_samples', derivatives.N_SAMPLES)} noisy "
             "copies (noise 0.15 of each image's range). Paired differences are exact minus "
             "closed form, means with 95 % bootstrap intervals, and Wilcoxon's signed-rank p-value; the verdict says "
             "which is more faithful by the metric (its direction taken into account), or "
             "that the difference is not measurable (the interval holds 0 or p >= 0.05).", ""]
    groups = grouped(records, "network", "method", "link")
    lines += ["### The maps and the weights", "",
              "The channel weights w_k = sum_ij alpha_kij ReLU(g_kij) of Grad-CAM++ as "
              "`jaxcam.compare_derivatives` returns them (Smooth Grad-CAM++ is compared by "
              "its maps: its public function returns no weights). Relative L2 is "
              "|w_exact - w_closed| / |w_closed|; a pair of channels changes order when the "
              "two weightings rank it oppositely.", "",
              "| network | method | link | images | maps' Spearman (median, min) | weights' "
              "relative L2 (median) | channels changing sign | channel pairs changing order "
              "| zero maps, exact / closed form |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (net, method, link), rs in groups.items():
        rho = np.array([r["spearman"] for r in rs])
        w = [r.get("relative_l2") for r in rs]
        has_w = w[0] is not None
        sign = np.mean([r["sign_changes"] for r in rs]) if has_w else None
        order = np.mean([r["order_flips"] for r in rs]) if has_w else None
        zeros = (f"{np.mean([r['exact_zero'] for r in rs]):.0%} / "
                 f"{np.mean([r['approx_zero'] for r in rs]):.0%}")
        changes = (f"{np.median(w):.2e} | {sign:.2%} | {order:.2%}" if has_w
                   else "- | - | -")
        lines.append(f"| `{net}` | {method} | {link} | {len(rs)} | {np.median(rho):.4f}, "
                     f"{rho.min():.4f} | {changes} | {zeros} |")
    lines += ["", "### Paired differences of the metrics (exact minus closed form)", ""]
    for (net, method, link), rs in groups.items():
        lines += [f"#### `{net}`, {method}, {link}", "",
                  "| metric | exact | closed form | difference (95 % CI) | Wilcoxon p | verdict |",
                  "|---|---|---|---|---|---|"]
        for metric, result in paired[(net, method, link)].items():
            a = np.mean([r["exact"][metric] for r in rs])
            b = np.mean([r["approx"][metric] for r in rs])
            verdict = VERDICTS.get(result["verdict"], result["verdict"])
            lines.append(f"| {metric} | {a:.4f} | {b:.4f} | "
                         f"{_fmt(result['difference'])} | {_p(result['wilcoxon']['p'])} | "
                         f"{verdict} |")
        lines.append("")
    return lines


def probability_section(records: list[dict]) -> list[str]:
    """Where the difference comes from: the share of channels whose weight changes sign,
    and of channel pairs whose order flips, binned by the predicted probability."""
    lines = ["### Where the difference comes from", "",
             "Grad-CAM++'s channel weights, exact against closed form, by the probability "
             "the network gives the true class (bins of the images' probability).", "",
             "| network | link | probability | images | channels changing sign | pairs "
             "changing order | maps' Spearman (median) |", "|---|---|---|---|---|---|---|"]
    for net in sorted({r["network"] for r in records}):
        for link in dict.fromkeys(r["link"] for r in records):
            rs = [r for r in records if r["network"] == net and r["link"] == link
                  and r["method"] == "grad_cam_pp"]
            for lo, hi in zip(PROBABILITY_BINS[:-1], PROBABILITY_BINS[1:]):
                b = [r for r in rs if stats.in_bin(r["probability"], lo, hi)]
                if not b:
                    continue
                lines.append(f"| `{net}` | {link} | [{lo}, {hi}) | {len(b)} | "
                             f"{np.mean([r['sign_changes'] for r in b]):.2%} | "
                             f"{np.mean([r['order_flips'] for r in b]):.2%} | "
                             f"{np.median([r['spearman'] for r in b]):.4f} |")
    return lines + [""]


def findings(records: list[dict], paired: dict[tuple, dict]) -> list[str]:
    """The answer in a few lines: per network, method and link, the metrics by which the
    exact or the closed-form maps are measurably more faithful (or better localised), and
    by how much; "no measurable difference" where no metric shows one (``paired``:
    :func:`paired_metrics` of the records)."""
    lines = ["## Findings", "",
             "Exact minus closed-form higher-order terms on the held-out single-object "
             "images, per network, method and link; a metric is listed where its paired "
             "difference is measurable (95 % bootstrap interval excluding 0 and Wilcoxon "
             "p < 0.05), with the mean difference in the metric's units.", ""]
    for (net, method, link), rs in grouped(records, "network", "method", "link").items():
        better = {"exact better": [], "closed form better": []}
        for metric, result in paired[(net, method, link)].items():
            side = VERDICTS.get(result["verdict"])
            if side:
                better[side].append(f"{metric} {result['difference']['mean']:+.4f}")
        zero = np.mean([r["exact_zero"] for r in rs])
        parts = [f"{side} by {', '.join(m)}" for side, m in better.items() if m]
        text = "; ".join(parts) if parts else (
            f"no measurable difference on any of the {len(METRICS)} metrics")
        note = (f" (the exact maps are zero on {zero:.0%} of the images: the head's second "
                "and third derivatives vanish)" if zero > 0 else "")
        lines.append(f"- `{net}`, {method}, {link} ({len(rs)} images): {text}{note}.")
    return lines + [""]


def methods_section(records: list[dict], title: str, intro: str) -> list[str]:
    """Every method: each metric's mean with its interval, per network and group of
    images, and the runtime per image."""
    lines = [f"## {title}", "", intro, ""]
    names = list(METRICS)
    compiled = False                       # a row whose time includes the compilation
    for (net, split), rs in grouped(records, "network", "split").items():
        lines += [f"### `{net}`, {split.replace('_', '-')} images", "",
                  "| method | images | " + " | ".join(names) + " | ms / image |",
                  "|---|---|" + "---|" * len(names) + "---|"]
        for (method,), ms in grouped(rs, "method").items():
            cells = []
            for name in names:
                v = stats.bootstrap_mean([r[name] for r in ms])
                cells.append(f"{v['mean']:.3f} ({v['low']:.3f}, {v['high']:.3f})")
            # one image is one batch: its time cannot leave the compilation out
            dagger = " †" if len(ms) == 1 else ""
            compiled |= len(ms) == 1
            lines.append(f"| {method} | {len(ms)} | " + " | ".join(cells)
                         + f" | {1000 * ms[0]['seconds_per_image']:.2f}{dagger} |")
        lines.append("")
    if compiled:
        lines += ["† One image, so one batch: its time includes the compilation.", ""]
    return lines


SHAPES_INTRO = (
    "Each method's map for the labelled class at `act5` (8 x 8, upsampled to 64 x 64), on "
    "held-out images of each split; means with 95 % bootstrap intervals (perturbation "
    "methods on fewer images: see the count). Pointing game with the 15 px-at-224 px "
    "tolerance on the labelled objects' masks; energy inside their boxes. Lower is better "
    "for deletion and average drop, higher for the rest. Time: steady-state milliseconds "
    "per image on this machine (the first batch, which compiles, left out).")
def lite0_intro() -> str:
    """How the Lite0 part's images and scores are made (from its constants)."""
    from benchmarks.study import lite0

    return (
        "EfficientNet-Lite0 with its bundled ImageNet weights, each method's map at "
        "`_swish` (7 x 7, upsampled to 224 x 224) for the explained class. *photos*: square "
        "views (whole, shifted, zoomed, mirrored) of `chelsea.png` (tiger cat) and "
        "`coffee.png` (espresso), alternating; *mosaics*: 2 x 2 grids of the two photos, "
        "each class present explained in turn (the grid pointing game: pointing at the "
        "other photo's tiles misses). The ground truth is the hand-drawn box of "
        "`benchmarks/study/photos.json`; the cat fills its photo, so the *photos* "
        "localisation is informative for the espresso only. The Score-CAM family runs as "
        f"Faster Score-CAM on the {lite0.TOP_N} channels of largest variance (of 1,280), "
        "on the first "
        f"{lite0.PERTURBATION_IMAGES} image(s) of each group; ROAD at the percentiles "
        f"{', '.join(map(str, lite0.ROAD_PERCENTILES))} with its imputation solved to "
        f"{lite0.ROAD_TOL:g}. Means with 95 % bootstrap intervals, from few images: this "
        "part shows the methods on a real network and real photos; the statistics are the "
        "shapes networks'.")


def sanity_section(records: list[dict]) -> list[str]:
    """The cascading randomisation: mean Spearman per method and re-initialised group."""
    layers = list(dict.fromkeys(r["layer"] for r in records))
    lines = ["## Sanity check: cascading model-parameter randomisation", "",
             "Mean Spearman correlation of each method's maps with the trained network's as "
             "`shapes-relu`'s parameter groups are re-initialised from the output down "
             "(each column: that group and every one above it). A method that explains the "
             "network falls towards 0; one that ignores it stays near 1.", "",
             "| method | " + " | ".join(f"{layer}" for layer in layers) + " |",
             "|---|" + "---|" * len(layers)]
    by_method: dict[str, dict] = {}
    for r in records:
        by_method.setdefault(r["method"], {})[r["layer"]] = r["spearman"]
    for method, row in by_method.items():
        lines.append(f"| {method} | " + " | ".join(
            f"{row[layer]:.2f}" if layer in row else "-" for layer in layers) + " |")
    return lines + [""]
