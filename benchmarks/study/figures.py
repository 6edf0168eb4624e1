"""The study's figures: exact and closed-form maps side by side, the paired differences
and the methods' scores as bars with their intervals, and the weights' sign changes by
probability. Every figure is drawn from the records (and, for the maps, from the trained
networks they name); matplotlib is needed only here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import jaxcam
from jaxcam import models
from jaxcam.datasets import shapes

from benchmarks.study import stats
from benchmarks.study.report import grouped

LINK_COLOURS = {"exp": "#4477aa", "softmax": "#ee6677", "log_softmax": "#228833",
                "logit": "#ccbb44"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def maps_figure(path: Path, records: list[dict], *, quick: bool, link: str = "softmax",
                per_network: int = 2, scale: int = 2) -> Path:
    """For each shapes network, the ``per_network`` held-out images whose exact and
    closed-form Grad-CAM++ maps (``link``) agree least: the image, both maps, and their
    absolute difference on the maps' own scale (not renormalised)."""
    from benchmarks.study import derivatives

    rows, titles = [], []
    for name in derivatives.NETWORKS:
        rs = sorted((r for r in records if r["network"] == name and r["link"] == link
                     and r["method"] == "grad_cam_pp"), key=lambda r: r["spearman"])
        picked = [r["index"] for r in rs[:per_network]]
        if not picked:
            continue
        trained = models.train_shapes(name, quick=quick)
        split = models.load(name, layer=derivatives.LAYER, weights=str(trained.path))
        data = shapes.generate(max(picked) + 1, split="single", size=trained.config.size,
                               seed=0, start=derivatives.HELD_OUT)
        x = models.preprocess_batch(data.images[picked])
        cmp = jaxcam.compare_derivatives(split, x, np.asarray(data.labels[picked]), link=link)
        exact, approx = np.asarray(cmp.maps_exact), np.asarray(cmp.maps_approx)
        size = data.size * scale
        for k, i in enumerate(picked):
            image = cv2.resize(data.images[i], (size, size), interpolation=cv2.INTER_NEAREST)
            cells = [image]
            for cam in (exact[k], approx[k], np.abs(exact[k] - approx[k])):
                cam = cv2.resize(np.clip(cam, 0, 1).astype(np.float32), (size, size),
                                 interpolation=cv2.INTER_LINEAR)
                cells.append(jaxcam.viz.overlay(image, cam))
            rows.append(cells)
            titles.append(f"{name} #{i} ({shapes.CLASSES[data.labels[i]]}), "
                          f"rho {float(cmp.spearman[k]):.2f}")
    grid = jaxcam.viz.grid(rows, ["image", "exact", "closed form", "|difference|"], titles,
                           height=64 * scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    return jaxcam.viz.write_png(path, grid)


def differences_figure(path: Path, records: list[dict], metrics: dict) -> Path:
    """Exact's advantage over the closed form by every metric (the paired difference,
    negated where lower is better, so that above 0 is always "exact better") with 95 %
    bootstrap intervals: a panel per network and method, a bar per link.

    ``metrics``: name -> higher is better."""
    plt = _pyplot()
    groups = {key: grouped(rs, "link") for key, rs in
              grouped(records, "network", "method").items()}
    keys = sorted(groups)
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 2.6 * len(keys)), squeeze=False)
    names = list(metrics)
    for ax, key in zip(axes[:, 0], keys):
        links = [link for (link,) in groups[key]]
        width = 0.8 / len(links)
        for j, link in enumerate(links):
            rs = groups[key][(link,)]
            means, lows, highs = [], [], []
            for metric in names:
                sign = 1.0 if metrics[metric] else -1.0
                d = stats.bootstrap_mean([sign * (r["exact"][metric] - r["approx"][metric])
                                          for r in rs])
                means.append(d["mean"])
                lows.append(d["mean"] - d["low"])
                highs.append(d["high"] - d["mean"])
            ax.bar(np.arange(len(names)) + (j - (len(links) - 1) / 2) * width, means, width,
                   yerr=[lows, highs], capsize=2, label=link,
                   color=LINK_COLOURS.get(link, "grey"))
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(np.arange(len(names)), names, fontsize=8)
        ax.set_title(f"{key[0]}, {key[1]}: exact's advantage (above 0: exact more "
                     "faithful or better localised)", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
    axes[0, 0].legend(fontsize=7, ncol=len(LINK_COLOURS), loc="lower left",
                      bbox_to_anchor=(0.0, 1.12))
    fig.tight_layout()
    return _save(fig, path)


def probability_figure(path: Path, records: list[dict], bins) -> Path:
    """The share of channels whose Grad-CAM++ weight changes sign, and of channel pairs
    whose order flips, exact against closed form, by the probability of the true class:
    a line per link, a column per network."""
    plt = _pyplot()
    networks = sorted({r["network"] for r in records})
    rows = (("sign_changes", "channels changing sign"), ("order_flips", "pairs changing order"))
    fig, axes = plt.subplots(len(rows), len(networks), figsize=(4.5 * len(networks), 5.2),
                             squeeze=False, sharey="row", sharex=True)
    centres = np.arange(len(bins) - 1)
    for column, net in enumerate(networks):
        for row, (key, label) in enumerate(rows):
            ax = axes[row, column]
            for link in dict.fromkeys(r["link"] for r in records):
                rs = [r for r in records if r["network"] == net and r["link"] == link
                      and r["method"] == "grad_cam_pp"]
                ys = []
                for lo, hi in zip(bins[:-1], bins[1:]):
                    b = [r[key] for r in rs if stats.in_bin(r["probability"], lo, hi)]
                    ys.append(np.mean(b) if b else np.nan)
                ax.plot(centres, ys, marker="o", label=link,
                        color=LINK_COLOURS.get(link, "grey"))
            if row == 0:
                ax.set_title(net, fontsize=9)
            if column == 0:
                ax.set_ylabel(label, fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
        axes[-1, column].set_xticks(centres, [f"[{lo}, {hi})" for lo, hi in
                                              zip(bins[:-1], bins[1:])], fontsize=7,
                                    rotation=20)
        axes[-1, column].set_xlabel("probability of the true class", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return _save(fig, path)


def methods_figure(path: Path, records: list[dict], metrics: tuple[str, ...]) -> Path:
    """Every method's mean score with its 95 % bootstrap interval: a panel per metric, a
    bar per (network, images) group (Faster Score-CAM's ``-topN`` on the row of its
    method)."""
    plt = _pyplot()
    records = [{**r, "method": r["method"].split("-top")[0]} for r in records]
    groups = list(dict.fromkeys((r["network"], r["split"]) for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics),
                                                         0.28 * len(methods) * len(groups)
                                                         / 2 + 1.5),
                             squeeze=False, sharey=True)
    height = 0.8 / len(groups)
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes[0], metrics):
        for g, (net, split) in enumerate(groups):
            ys, means, errs = [], [], [[], []]
            for m, method in enumerate(methods):
                v = [r[metric] for r in records if r["network"] == net and r["split"] == split
                     and r["method"] == method]
                if not v:
                    continue
                s = stats.bootstrap_mean(v)
                ys.append(m + (g - (len(groups) - 1) / 2) * height)
                means.append(s["mean"])
                errs[0].append(s["mean"] - s["low"])
                errs[1].append(s["high"] - s["mean"])
            ax.barh(ys, means, height, xerr=errs, capsize=1.5, color=colours(g),
                    label=f"{net}, {split.replace('_', '-')}")
        ax.set_title(metric, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 0].set_yticks(np.arange(len(methods)), methods, fontsize=7)
    axes[0, 0].invert_yaxis()
    axes[0, -1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)
