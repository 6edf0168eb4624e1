"""Every metric of the study for a batch of maps, in one compiled call, and the per-image
records' JSONL files (append-only, so a rerun continues where a run stopped)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam import metrics

# name -> higher is better
FAITHFULNESS = {"deletion": False, "insertion": True, "average_drop": False,
                "increase_in_confidence": True, "road_combined": True}
LOCALISATION = {"pointing_game": True, "energy_in_box": True}
STEPS = 20
TOLERANCE_SHARE = 15 / 224        # Zhang et al.'s 15 px at 224 px, as a share of the side


@functools.partial(jax.jit, static_argnames=("localise", "road_percentiles", "road_tol"))
def faithfulness(split, x, maps, classes, *, localise: bool = False, masks=None, boxes=None,
                 road_percentiles: tuple = metrics.ROAD_PERCENTILES, road_tol: float = 1e-6):
    """``{metric: (B,)}`` of maps (B, H, W) in [0, 1] for ``classes`` (B,); with
    ``localise``, the pointing game (tolerant, on ``masks``) and the energy inside
    ``boxes`` (B, H, W) too. ROAD at ``road_percentiles``, its imputation solved to the
    relative residual ``road_tol``."""
    predict = metrics.predictor(split)
    maps = jnp.clip(maps.astype(jnp.float32), 0.0, 1.0)
    out = {
        "deletion": metrics.deletion(predict, x, maps, classes, steps=STEPS),
        "insertion": metrics.insertion(predict, x, maps, classes, steps=STEPS),
        "average_drop": metrics.average_drop(predict, x, maps, classes),
        "increase_in_confidence": metrics.increase_in_confidence(predict, x, maps, classes),
        "road_combined": metrics.road_combined(predict, x, maps, classes,
                                               percentiles=road_percentiles, tol=road_tol),
    }
    if localise:
        out["pointing_game"] = metrics.pointing_game(
            maps, masks, tolerance=TOLERANCE_SHARE * maps.shape[-1])
        out["energy_in_box"] = metrics.energy_pointing_game(maps, boxes)
    return out


def box_masks(boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S) bool: every object's box (y0, x0, y1, x1; -1 rows unused) filled, for the
    objects of the labelled class given as (N, M, 4) boxes already filtered."""
    out = np.zeros((len(boxes), size, size), bool)
    for i, rows in enumerate(boxes):
        for y0, x0, y1, x1 in rows:
            if y0 >= 0:
                out[i, y0:y1, x0:x1] = True
    return out


def target_boxes(data) -> np.ndarray:
    """(N, S, S): the boxes of the labelled objects (all of them in multi-instance)."""
    keep = (data.classes == data.labels[:, None])[..., None]
    return box_masks(np.where(keep, data.boxes, -1), data.size)


class Records:
    """A JSONL file of per-image records, each with a ``unit`` key and ``first`` / ``last``
    flags; a unit whose last record is written is done and skipped by a rerun, and a unit
    cut by a stop is redone from its first record."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done = set()
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue                      # a line cut by a stop: redone
                if record.get("last"):
                    self.done.add(record["unit"])

    def write(self, unit: str, records: Iterable[dict], *, seconds: float | None = None
              ) -> None:
        """Appends a unit's records at once; the last one marks the unit done. ``seconds``,
        the unit's run time, is kept in each record as ``unit_seconds``."""
        records = list(records)
        extra = {} if seconds is None else {"unit_seconds": float(seconds)}
        lines = [json.dumps({"unit": unit, **r, **extra, "first": i == 0,
                             "last": i == len(records) - 1}) for i, r in enumerate(records)]
        cut = self.path.exists() and self.path.stat().st_size > 0 and not _ends_in_newline(
            self.path)
        with open(self.path, "a") as f:
            f.write(("\n" if cut else "") + "\n".join(lines) + "\n")   # never onto a cut line
            f.flush()
        self.done.add(unit)

    def seconds(self) -> float:
        """The run time of the completed units (each unit's latest run), summed."""
        units = {r["unit"]: r.get("unit_seconds", 0.0) for r in self.read()}
        return float(sum(units.values()))

    def read(self) -> list[dict]:
        """Every record of the units that were completed (each unit's latest run)."""
        if not self.path.exists():
            return []
        units: dict[str, list] = {}
        pending: dict[str, list] = {}
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("first"):
                pending[record["unit"]] = []      # a new run of the unit: drop a cut one
            pending.setdefault(record["unit"], []).append(record)
            if record.get("last"):
                units[record["unit"]] = pending.pop(record["unit"])
        return [r for rs in units.values() for r in rs]


def _ends_in_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def as_floats(tree: dict) -> dict:
    """``{name: (B,) array}`` -> ``[{name: float}, ...]`` per image."""
    arrays = {k: np.asarray(v, np.float64) for k, v in tree.items()}
    n = len(next(iter(arrays.values())))
    return [{k: float(v[i]) for k, v in arrays.items()} for i in range(n)]
