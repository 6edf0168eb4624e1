"""The cost curves' command (``python -m benchmarks curves``), on two small points each:
its JSON, Markdown table and plot, and the memory account against a hand count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

from benchmarks import curves

ROOT = Path(__file__).resolve().parents[1]


def test_memory_is_xla_account_of_arguments_outputs_and_temporaries():
    x = jnp.zeros((256, 256), jnp.float32)                # 256 KiB in, 256 KiB out
    assert curves.memory_bytes(lambda x: x + 1.0, x) == 2 * 256 * 256 * 4


@pytest.mark.parametrize("axis", ["masks", "engine"])
def test_quick_curve_writes_its_table_json_and_plot(axis, tmp_path):
    run = subprocess.run([sys.executable, "-m", "benchmarks", "curves", "--axis", axis,
                          "--quick", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / f"{axis}.json").read_text())
    assert [p["x"] for p in result["points"]] == curves.QUICK[axis]
    for point in result["points"]:
        assert "floor" in point and len([k for k in point if isinstance(point[k], dict)]) >= 2
        for call in (v for v in point.values() if isinstance(v, dict)):
            assert call["median_s"] > 0 and call["compile_s"] > 0 and call["memory_bytes"] > 0
    table = (tmp_path / f"{axis}.md").read_text()
    assert table.count("\n| ") == len(result["points"]) + 1 and "/ floor" in table
    assert (tmp_path / "figures" / f"curve_{axis}.png").stat().st_size > 1000
    if axis == "masks":       # the chunk bounds Score-CAM's memory: more per chunk, more bytes
        small, large = (p["score_cam"]["memory_bytes"] for p in result["points"])
        assert small < large


def test_quick_needs_an_out_folder():
    with pytest.raises(SystemExit):
        curves.main(["--axis", "masks", "--quick"])


def test_results_section_shows_each_measured_curve_and_names_the_rest(tmp_path):
    (tmp_path / "masks.md").write_text("### Curve: masks\n\n| masks |\n")
    section = curves.results_section(tmp_path)
    assert section.startswith(curves.BEGIN) and section.endswith(curves.END)
    assert "### Curve: masks" in section and "figures/curve_masks.png" in section
    assert "Not measured yet: batch, samples, depth, engine." in section
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nbefore\n")
    for _ in range(2):                                     # replaced, never appended twice
        curves.write_results(results, tmp_path)
    text = results.read_text()
    assert text.startswith("# Results\n\nbefore\n") and text.count(curves.BEGIN) == 1
