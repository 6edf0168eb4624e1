"""The command line end to end, through subprocesses: folders in batches, results.jsonl
and --resume, 4 devices against 1, two jax.distributed processes, grid, demo, compare,
the listings, and errors as a user sees them (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ASSETS = Path(__file__).resolve().parents[1] / "jaxcam" / "assets"
FIELDS = {"path", "model", "layer", "method", "class", "name", "probability", "targets",
          "top5", "maps", "seconds"}


def _jaxcam(*args, cwd, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "jaxcam.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, **kwargs)


def _ok(run):
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    return run


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of photos in every format and kind the reader takes, one bad file and one
    that is not a photo."""
    root = tmp_path_factory.mktemp("photos")
    coffee = cv2.imread(str(ASSETS / "coffee.png"))
    cat = cv2.imread(str(ASSETS / "chelsea.png"))
    (root / "sub").mkdir()
    cv2.imwrite(str(root / "coffee.png"), coffee)
    cv2.imwrite(str(root / "cat.jpg"), cat, [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(root / "sub" / "gray16.png"),
                (cv2.cvtColor(coffee, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257))
    rgba = np.dstack([cat, np.full(cat.shape[:2], 200, np.uint8)])
    cv2.imwrite(str(root / "sub" / "rgba.webp"), rgba, [cv2.IMWRITE_WEBP_QUALITY, 101])
    cv2.imwrite(str(root / "sub" / "small.bmp"), cv2.resize(coffee, (150, 120)))
    cv2.imwrite(str(root / "sub" / "tall.tiff"), coffee[:, :200])
    data = (ASSETS / "coffee.png").read_bytes()
    (root / "bad.png").write_bytes(data[:len(data) // 3])
    (root / "notes.txt").write_text("not a photo")
    return root


GOOD = ["cat.jpg", "coffee.png", "sub/gray16.png", "sub/rgba.webp", "sub/small.bmp",
        "sub/tall.tiff"]


def test_explain_a_folder_with_results_and_resume(tmp_path, photos):
    run = _jaxcam("explain", str(photos), "--batch-size", "4", "--top", "2", "--format",
                  "both", "--out", "out", cwd=tmp_path)
    assert run.returncode == 1, run.stderr                      # one photo was skipped
    assert run.stderr.splitlines() == [l for l in run.stderr.splitlines()
                                       if l.startswith("jaxcam: error: ") and "bad.png" in l]
    assert len(run.stderr.splitlines()) == 1 and "truncated" in run.stderr
    records = _records(tmp_path / "out" / "results.jsonl")
    by_path = {Path(r["path"]).relative_to(photos.resolve()).as_posix(): r for r in records}
    assert sorted(by_path) == sorted(GOOD + ["bad.png"])
    assert set(by_path["bad.png"]) == {"path", "error"} and "truncated" in by_path[
        "bad.png"]["error"]
    coffee = by_path["coffee.png"]
    assert set(coffee) == FIELDS
    assert coffee["class"] == 967 and coffee["name"] == "espresso"
    assert coffee["top5"][0]["class"] == 967 and len(coffee["top5"]) == 5
    assert [t["class"] for t in coffee["targets"]] == [t["class"] for t in coffee["top5"][:2]]
    assert coffee["probability"] == coffee["top5"][0]["probability"] > 0.5
    assert coffee["model"] == "efficientnet_lite0" and coffee["layer"] == "_swish"
    assert coffee["method"] == "grad_cam" and coffee["seconds"] > 0
    probs = [t["probability"] for t in coffee["top5"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    for name in GOOD:
        record = by_path[name]
        original = cv2.imread(str(photos / name), cv2.IMREAD_UNCHANGED)
        assert len(record["maps"]) == 2                          # --top 2
        for entry in record["maps"]:
            png = cv2.imread(entry["png"])
            assert png.shape[:2] == original.shape[:2], name     # the ORIGINAL photo's size
            raw = np.load(entry["npy"])
            assert raw.shape == (224, 224) and raw.dtype == np.float32
            assert 0.0 <= raw.min() and raw.max() <= 1.0 and raw.max() > 0.5
    assert (tmp_path / "out" / "sub" / "gray16_grad_cam_class967.png").exists()
    # --resume: a line cut short by a killed run is ignored; only the missing photo and
    # the bad one are tried again
    results = tmp_path / "out" / "results.jsonl"
    lines = results.read_text().splitlines()
    kept = [l for l in lines if "tall.tiff" not in l]
    results.write_text("\n".join(kept) + "\n" + '{"path": "cut sho')
    again = _jaxcam("explain", str(photos), "--batch-size", "4", "--top", "2", "--format",
                    "both", "--out", "out", "--resume", cwd=tmp_path)
    assert again.returncode == 1 and "explained 1 photos" in again.stdout, again.stderr
    records = [json.loads(l) for l in results.read_text().splitlines()
               if not l.startswith('{"path": "cut sho')]
    ok = [Path(r["path"]).name for r in records if "error" not in r]
    assert sorted(ok) == sorted(Path(n).name for n in GOOD)      # each photo exactly once


def test_four_devices_equal_one(tmp_path, photos):
    args = ("explain", str(photos / "sub"), str(photos / "coffee.png"), "--batch-size", "4",
            "--method", "grad_cam,grad_cam_pp:exact", "--format", "npy")
    _ok(_jaxcam(*args, "--out", "one", cwd=tmp_path))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    code = ("import sys, jax, jaxcam, jaxcam.cli as c; assert jax.local_device_count() == 4; "
            "assert jaxcam.data_mesh().devices.size == 4; sys.exit(c.main(sys.argv[1:]))")
    _ok(subprocess.run([sys.executable, "-c", code, *args, "--out", "four"], cwd=tmp_path,
                       env=env, capture_output=True, text=True))
    one = sorted((tmp_path / "one").rglob("*.npy"))
    assert len(one) == 10                                    # 5 photos x 2 methods
    for path in one:
        four = tmp_path / "four" / path.relative_to(tmp_path / "one")
        np.testing.assert_allclose(np.load(four), np.load(path), rtol=0, atol=1e-5)
    a, b = (_records(tmp_path / d / "results.jsonl") for d in ("one", "four"))
    assert [r["class"] for r in a] == [r["class"] for r in b]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_distributed_processes_split_a_folder(tmp_path, photos):
    address = f"localhost:{_free_port()}"
    runs = [subprocess.Popen(
        [sys.executable, "-m", "jaxcam.cli", "explain", str(photos), "--out", "out",
         "--batch-size", "2", "--coordinator", address, "--num-processes", "2",
         "--process-id", str(i)], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] in ([0, 1], [1, 0]), outs  # bad.png in one share
    shards = sorted((tmp_path / "out").glob("results-*-of-00002.jsonl"))
    assert [p.name for p in shards] == ["results-00000-of-00002.jsonl",
                                        "results-00001-of-00002.jsonl"]
    paths = [r["path"] for shard in shards for r in _records(shard)]
    assert sorted(paths) == sorted(str((photos / n).resolve()) for n in GOOD + ["bad.png"])
    assert all(_records(shard) for shard in shards)          # both did a share


def test_grid_puts_methods_and_layers_side_by_side(tmp_path):
    _ok(_jaxcam("grid", str(ASSETS / "coffee.png"), "--method", "grad_cam,grad_cam_pp:exact",
                "--layer", "_blocks.15,_swish", "--out", "g", cwd=tmp_path))
    figure = cv2.imread(str(tmp_path / "g" / "coffee_grid_class967.png"))
    h, w = cv2.imread(str(ASSETS / "coffee.png")).shape[:2]
    cell = round(w * 224 / h) + 8
    assert figure.shape[1] == 2 * cell                       # two columns
    assert figure.shape[0] == 28 + 2 * (28 + 224 + 8)        # titles, two rows


def test_listings(tmp_path):
    layers = _ok(_jaxcam("layers", "resnet18", cwd=tmp_path)).stdout.splitlines()
    assert "layer4   (default)" in layers and "layer3" in layers
    assert "efficientnet_lite0" in _ok(_jaxcam("models", cwd=tmp_path)).stdout
    assert "grad_cam_pp" in _ok(_jaxcam("methods", cwd=tmp_path)).stdout
    for command in ("explain", "grid", "compare", "convert", "demo", "layers"):
        assert "example" in _ok(_jaxcam(command, "--help", cwd=tmp_path)).stdout, command


def _r18_weights(tmp_path) -> Path:
    code = ("import jaxcam; jaxcam.models.save_variables('r18.msgpack', "
            "jaxcam.models.init_variables('resnet18'), model='resnet18')")
    _ok(subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True))
    return tmp_path / "r18.msgpack"


COFFEE = str(ASSETS / "coffee.png")
ERRORS = [
    (("explain", COFFEE, "--model", "resnet5"), r"unknown .*'resnet5'.*resnet50"),
    (("explain", COFFEE, "--layer", "_blocks.99"), r"_blocks\.99"),
    (("explain", COFFEE, "--method", "score_cma"), r"did you mean score_cam"),
    (("explain", COFFEE, "--method", "grad_cam:exact"), r"no higher-order derivatives"),
    (("explain", COFFEE, "--class", "1000"), r"--class 1000 is out of range.*1000 classes"),
    (("explain", COFFEE, "--top", "0"), r"--top 0 must lie in 1\.\.1000"),
    (("explain", "missing.jpg"), r"missing\.jpg: no such file or folder"),
    (("explain", "empty"), r"no photos .* found in empty"),
    (("explain", COFFEE, "--model", "resnet34", "--weights", "r18.msgpack"), r"r18|resnet18"),
    (("explain", "cut.png"), r"cut\.png.*truncated"),
    (("grid", "cut.png"), r"cut\.png.*truncated"),
    (("grid", COFFEE, "--class", "-1"), r"--class -1 is out of range"),
    (("compare", COFFEE, "--class", "5000"), r"--class 5000 is out of range"),
    (("convert", "resnet18", "cut.png", "-o", "r.msgpack"), r"cut\.png"),
    (("layers", "vgg17"), r"unknown .*'vgg17'"),
]


@pytest.mark.parametrize("args, pattern", ERRORS, ids=[" ".join(a[:2]) + f"-{i}"
                                                      for i, (a, _) in enumerate(ERRORS)])
def test_errors_are_one_line_exit_2_and_write_nothing(tmp_path, args, pattern):
    import re

    (tmp_path / "empty").mkdir()
    data = Path(COFFEE).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    if "r18.msgpack" in args:
        _r18_weights(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    run = _jaxcam(*args, "--out", "o", cwd=tmp_path) if args[0] in (
        "explain", "grid", "compare") else _jaxcam(*args, cwd=tmp_path)
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(("jaxcam: error: ", "error: ")), lines
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before   # nothing partial


def test_debug_shows_the_traceback(tmp_path):
    run = _jaxcam("explain", COFFEE, "--class", "1000", "--debug", cwd=tmp_path)
    assert run.returncode == 1 and "Traceback" in run.stderr
    assert "--class 1000 is out of range" in run.stderr.splitlines()[-1]
