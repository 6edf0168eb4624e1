"""The benchmark suite's document on a tiny model: its schema and the Markdown table
(structure only, never timings)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcam import bench as suite

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._standin import torchvision_standin  # noqa: E402


@pytest.fixture(scope="module")
def document():
    cases = [suite.Case("resnet18", "layer4", 32, "grad_cam", 2),
             suite.Case("resnet18", "layer4", 32, "grad_cam_pp:exact", 1),
             suite.Case("resnet18", "layer3", 32, "score_cam", 1, (("chunk_size", 128),))]
    with torchvision_standin():                       # pytorch-grad-cam imports torchvision
        return suite.run(cases, repeats=1, progress=None)


def test_rows_baselines_and_peers(document):
    suite.validate(json.loads(json.dumps(document)))          # survives JSON as is
    rows = document["rows"]
    assert [(r["method"], r["library"]) for r in rows] == [
        ("grad_cam", "jaxcam"), ("grad_cam", "pytorch_grad_cam"), ("grad_cam", "torchcam"),
        ("grad_cam_pp:exact", "jaxcam"), ("score_cam", "jaxcam")]
    assert [r["baseline"]["kind"] for r in rows] == [
        "forward", "jaxcam", "jaxcam", "closed_form", "masked_forward"]
    assert rows[-1]["baseline"]["images"] == 256               # layer3's channels, 1 image
    assert rows[-1]["options"] == {"chunk_size": 128}
    for r in rows[1:3]:                                        # the same computation
        assert r["agreement"] > 0.99, r
    env = document["environment"]
    assert env["cpu_count"] >= 1 and env["jax"] and env["torch"]


def test_validate_rejects_broken_documents(document):
    for breaks in (lambda d: d.update(schema=0),
                   lambda d: d["rows"][0].pop("median_s"),
                   lambda d: d["rows"][0].update(min_s=d["rows"][0]["max_s"] + 1.0),
                   lambda d: d["rows"][1].update(agreement=1.5),
                   lambda d: d["environment"].pop("commit"),
                   lambda d: d["rows"][0]["baseline"].pop("ratio")):
        broken = copy.deepcopy(document)
        breaks(broken)
        with pytest.raises(ValueError):
            suite.validate(broken)


def test_markdown_has_a_line_per_row(document):
    table = suite.markdown(document).splitlines()
    header = [i for i, line in enumerate(table) if line.startswith("| model |")]
    assert len(header) == 1
    assert len(table) - header[0] - 2 == len(document["rows"])
    assert all(line.count("|") == 14 for line in table[header[0]:])


@pytest.mark.parametrize("command, in_repo", [(["-m", "benchmarks", "run"], True),
                                              (["-m", "jaxcam.cli", "bench"], False)])
def test_the_command_writes_json_and_markdown(tmp_path, command, in_repo):
    out = tmp_path / "r.json"
    run = subprocess.run([sys.executable, *command, "--models", "resnet18", "--methods",
                          "grad_cam", "--batch-sizes", "1", "--size", "32", "--repeats", "1",
                          "--no-peers", "--out", str(out)], cwd=ROOT if in_repo else tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    document = json.loads(out.read_text())
    suite.validate(document)
    assert [r["library"] for r in document["rows"]] == ["jaxcam"]
    assert "| resnet18 | 32 | grad_cam | 1 | jaxcam |" in out.with_suffix(".md").read_text()
