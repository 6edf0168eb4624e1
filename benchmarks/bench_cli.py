"""The command line against the PyTorch peers, on EfficientNet-Lite0's bundled weights.

1. ``jaxcam explain PHOTO`` as a whole process: cold (no compilation cache) and warm,
   against the equivalent pytorch-grad-cam script (``benchmarks/peers_cli.py single``).
2. Folder throughput (images/s) on 64 photos at batch 1, 8 and 32: jaxcam's batch engine
   (what ``jaxcam explain FOLDER`` runs: decode, one compiled program, overlays written)
   after one warm-up batch, against pytorch-grad-cam and torch-cam doing the same work
   (``peers_cli.py folder``, also warm), all in this run on this machine. The whole
   ``jaxcam explain FOLDER`` process with a warm compilation cache is timed too.
3. The variables placed on the device once against NumPy variables copied into every
   call (VGG16's forward pass).

    python benchmarks/bench_cli.py [--photos 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent / "jaxcam" / "assets"


def _wall(cmd, env=None, cwd=None) -> tuple[float, str]:
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {run.stderr[-2000:]}")
    return seconds, run.stdout


def make_photos(folder: Path, n: int) -> None:
    """n JPEG photos: random crops, scales and flips of the two bundled photos."""
    rng = np.random.default_rng(0)
    sources = [cv2.imread(str(ASSETS / f)) for f in ("coffee.png", "chelsea.png")]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = sources[i % 2]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[top:top + ch, left:left + cw]
        crop = cv2.resize(crop, None, fx=rng.uniform(0.7, 1.5), fy=rng.uniform(0.7, 1.5))
        if i % 3 == 0:
            crop = crop[:, ::-1]
        cv2.imwrite(str(folder / f"photo{i:03d}.jpg"), np.ascontiguousarray(crop),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])


def single_photo(work: Path, repeats: int) -> dict:
    env = {**os.environ, "JAXCAM_CACHE": str(work / "cache")}
    photo = str(ASSETS / "coffee.png")
    jaxcam = [sys.executable, "-m", "jaxcam.cli", "explain", photo, "--out", str(work / "j")]
    _wall(jaxcam, env)                               # converts the weights once (cached)
    shutil.rmtree(work / "cache" / "xla", ignore_errors=True)
    cold = _wall(jaxcam, env)[0]
    warm = [_wall(jaxcam, env)[0] for _ in range(repeats)]
    no_cache = [_wall(jaxcam + ["--no-compile-cache"], env)[0] for _ in range(repeats)]
    pgc = [_wall([sys.executable, str(HERE / "peers_cli.py"), "single", photo, "--out",
                  str(work / "p")])[0] for _ in range(repeats + 1)]
    return {"jaxcam_cold_s": cold, "jaxcam_warm_s": statistics.median(warm),
            "jaxcam_no_cache_s": statistics.median(no_cache),
            "pgc_script_s": statistics.median(pgc[1:]), "pgc_first_s": pgc[0]}


def jaxcam_throughput(folder: Path, batch: int, out: Path) -> dict:
    import jaxcam

    split = jaxcam.place(jaxcam.models.load("efficientnet_lite0"), jaxcam.data_mesh())
    config = jaxcam.batch.RunConfig("efficientnet_lite0", (split,),
                                    jaxcam.batch.parse_methods("grad_cam"), batch_size=batch,
                                    mesh=jaxcam.data_mesh(), out=out)
    photos = jaxcam.batch.find_images([folder])
    t0 = time.perf_counter()
    list(jaxcam.batch.explain_photos(photos[:batch], config))       # compile + warm-up
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    records = list(jaxcam.batch.explain_photos(photos, config))
    seconds = time.perf_counter() - t0
    assert all("error" not in r for r in records)
    return {"library": "jaxcam", "batch_size": batch, "images": len(records),
            "seconds": seconds, "images_per_s": len(records) / seconds, "first_batch_s": first}


def peer_throughput(library: str, folder: Path, batch: int, out: Path) -> dict:
    _, stdout = _wall([sys.executable, str(HERE / "peers_cli.py"), "folder", str(folder),
                       "--library", library, "--batch-size", str(batch), "--out", str(out)])
    return json.loads(stdout.strip().splitlines()[-1])


def cli_folder(folder: Path, batch: int, work: Path) -> float:
    env = {**os.environ, "JAXCAM_CACHE": str(work / "cache")}
    cmd = [sys.executable, "-m", "jaxcam.cli", "explain", str(folder), "--batch-size",
           str(batch), "--out", str(work / f"cli{batch}")]
    _wall(cmd, env)                                                 # fills the cache
    shutil.rmtree(work / f"cli{batch}")
    return _wall(cmd, env)[0]


def placed_variables(repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    import jaxcam
    from _timing import measure_many

    split = jaxcam.models.load("vgg16", weights="random")
    host = split.replace(variables=jax.tree_util.tree_map(np.asarray, split.variables))
    x = jnp.zeros((1, 224, 224, 3), jnp.float32)
    forward = jax.jit(lambda s, x: s.logits(x))
    r = measure_many({"numpy": (forward, (host, x)), "placed": (forward, (split, x))},
                     repeats=repeats)
    return {k: v["median_s"] for k, v in r.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import jax

    result = {"machine": f"{os.cpu_count()} CPU cores, jax {jax.__version__} on "
                         f"{jax.devices()[0].platform}"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "photos"
        make_photos(folder, args.photos)
        result["single_photo"] = single_photo(work, args.repeats)
        print(json.dumps(result["single_photo"]), flush=True)
        rows = []
        for batch in (int(b) for b in args.batches.split(",")):
            row = {"batch_size": batch}
            row["jaxcam"] = jaxcam_throughput(folder, batch, work / f"j{batch}")["images_per_s"]
            for library in ("pgc", "torchcam"):
                row[library] = peer_throughput(library, folder, batch,
                                               work / f"{library}{batch}")["images_per_s"]
            row["jaxcam_cli_process_s"] = cli_folder(folder, batch, work)
            rows.append(row)
            print(json.dumps(row), flush=True)
        result["folder"] = rows
    result["vgg16_forward_s"] = placed_variables(args.repeats + 2)
    print(json.dumps(result["vgg16_forward_s"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
