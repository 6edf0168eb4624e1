"""The peers' memory command (``python -m benchmarks memory``) on ResNet-18 at 64 px,
batch 2: one fresh process per case, its rows and the RESULTS.md section (structure and
the peak's definition, never sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import memory

ROOT = Path(__file__).resolve().parents[1]


def test_peak_is_this_programs_high_water_mark():
    before = memory._peak()
    block = np.ones(64 * 2**20 // 8)                  # 64 MiB touched
    assert memory._peak() >= before + 60 * 2**20 or before > 64 * 2**20
    assert memory._rss() <= memory._peak()
    del block


@pytest.mark.slow
def test_quick_run_measures_every_library_in_a_process_of_its_own(tmp_path):
    out = tmp_path / "memory.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "memory", "--quick",
                          "--methods", "forward,grad_cam", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads(out.read_text())
    rows = document["rows"]
    assert [(r["method"], r["library"]) for r in rows] == [
        ("forward", "jaxcam"), ("grad_cam", "jaxcam"), ("grad_cam", "pytorch_grad_cam"),
        ("grad_cam", "torchcam")]
    for r in rows:
        assert r["batch_size"] == 2 and r["size"] == 64
        assert 0 < r["ready_bytes"] <= r["peak_bytes"] and r["maps_s"] > 0
        # each process holds its own library's framework only
        assert r["imports"] == (["jax"] if r["library"] == "jaxcam" else ["torch"]), r
    table = out.with_suffix(".md").read_text()
    assert table.count("| resnet18 | 64 |") == 4
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n")
    for _ in range(2):                                     # rebuilt, not appended
        memory.write_results(document, results)
    assert results.read_text().count(memory.BEGIN) == 1
    again = subprocess.run([sys.executable, "-m", "benchmarks", "memory", "--out", str(out),
                            "--methods", "grad_cam"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode != 0 and "batch 2, not 32" in again.stderr
