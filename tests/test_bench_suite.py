"""The benchmark suite's document on a tiny model: its schema and the Markdown table
(structure only, never timings)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxcam
from jaxcam import bench as suite
from jaxcam.bench import cases as cases_module
from jaxcam.bench import parts as parts_module

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._standin import torchvision_standin  # noqa: E402


@pytest.fixture(scope="module")
def document():
    cases = [suite.Case("resnet18", "layer4", 32, "grad_cam", 2),
             suite.Case("resnet18", "layer4", 32, "grad_cam_pp:exact", 1),
             suite.Case("resnet18", "layer3", 32, "score_cam", 1, (("chunk_size", 128),)),
             suite.Case("resnet18", "layer4", 32, "ablation_cam", 2)]
    with torchvision_standin():                       # pytorch-grad-cam imports torchvision
        return suite.run(cases, repeats=1, progress=None)


def test_rows_baselines_and_peers(document):
    suite.validate(json.loads(json.dumps(document)))          # survives JSON as is
    rows = document["rows"]
    assert [(r["method"], r["library"]) for r in rows] == [
        ("grad_cam", "jaxcam"), ("grad_cam", "pytorch_grad_cam"), ("grad_cam", "torchcam"),
        ("grad_cam_pp:exact", "jaxcam"), ("score_cam", "jaxcam"), ("ablation_cam", "jaxcam")]
    assert [r["baseline"]["kind"] for r in rows] == [
        "forward", "jaxcam", "jaxcam", "closed_form", "masked_forward", "ablated_head"]
    score, ablation = rows[-2:]
    assert score["baseline"]["images"] == 256                  # layer3's channels, 1 image
    assert score["options"] == {"chunk_size": 128}
    # Ablation-CAM's floor is the head alone, once per channel and image: layer4's 512
    # channels x 2 images, at its default chunk (jaxcam.chunking.DEFAULT_CHUNKS)
    assert ablation["baseline"]["evaluations"] == 512 * 2
    assert ablation["baseline"]["ratio"] > 0
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


# --- the peers each case is compared with, and the full suite in parts

def test_peers_follow_the_declarations_and_the_options():
    def libraries(method, options=()):
        case = suite.Case("resnet18", "layer4", 64, method, 1, options)
        return [(p.library, p.cls) for p in cases_module.case_peers(case)]

    assert libraries("grad_cam") == [("pytorch_grad_cam", "GradCAM"), ("torchcam", "GradCAM")]
    assert libraries("grad_cam_pp:exact") == []                  # no peer has exact terms
    assert libraries("score_cam", (("chunk_size", 64),)) == []   # jaxcam's paper variant
    assert libraries("score_cam:variant=torchcam", (("chunk_size", 64),)) == [
        ("torchcam", "ScoreCAM")]
    assert libraries("score_cam:variant=pytorch-grad-cam") == [
        ("pytorch_grad_cam", "ScoreCAM")]
    assert libraries("score_cam:variant=torchcam:top_n=8") == []  # Faster Score-CAM
    assert libraries("smooth_grad_cam_pp:variant=torchcam", (("n_samples", 4),)) == [
        ("torchcam", "SmoothGradCAMpp")]
    for method in jaxcam.available_methods():                  # every declared peer is
        called = {f"{p.library} {p.cls}" for p in cases_module.peers(method)}  # called or
        for name in jaxcam.method_info(method).peers:          # named with its reason
            library, _, cls = name.partition(" ")
            assert (f"{cases_module.LIBRARIES[library]} {cls}" in called
                    or cls in cases_module.NOT_CALLED), name


def test_peer_options_in_the_peers_terms():
    x = np.zeros((1, 8, 8, 3), np.float32)
    x[0, 0, 0, 0] = 2.0
    smooth = suite.Case("resnet18", "layer4", 8, "smooth_grad_cam_pp:variant=torchcam", 1,
                        (("n_samples", 6), ("noise", 0.25)))
    (peer,) = cases_module.case_peers(smooth)
    assert cases_module.peer_kwargs(peer, smooth, x) == {"num_samples": 6, "std": 0.5}
    score = suite.Case("resnet18", "layer4", 8, "score_cam:variant=torchcam", 1)
    (peer,) = cases_module.case_peers(score)
    assert cases_module.peer_kwargs(peer, score, x) == {"batch_size": 16,
                                                        "input_shape": (3, 8, 8)}


def test_parts_cover_the_suite_in_order_and_balance_it():
    cases = suite.SUITES["full"]()
    for m in (1, 3, 6, len(cases)):
        parts = parts_module.split_parts(cases, m, 5)
        assert len(parts) == m and all(parts)
        assert [c for part in parts for c in part] == cases
    cost = [sum(parts_module.estimate_s(c, 5) for c in part)
            for part in parts_module.split_parts(cases, 6, 5)]
    biggest = max(parts_module.estimate_s(c, 5) for c in cases)
    assert max(cost) <= sum(cost) / 6 + biggest                 # greedy bound
    for bad in ("0/6", "7/6", "2", "a/b", "2/0"):
        with pytest.raises(ValueError, match="N/M"):
            parts_module.parse_part(bad)
    with pytest.raises(ValueError, match="M <="):
        parts_module.split_parts(cases, len(cases) + 1, 5)


def _part_document(document, method):
    part = copy.deepcopy(document)
    for row in part["rows"]:
        row["method"] = method
    return {**part, "suite": "full", "seconds": 12.0}


def test_parts_append_to_one_document_and_rebuild_the_results(document, tmp_path):
    out, results = tmp_path / "full.json", tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nkept above\n")
    parts_module.add_part(out, _part_document(document, "b"), (2, 3), "cmd 2")
    whole = parts_module.add_part(out, _part_document(document, "a"), (1, 3), "cmd 1")
    n = len(document["rows"])
    assert [r["method"] for r in whole["rows"]] == ["a"] * n + ["b"] * n   # part order
    again = parts_module.add_part(out, _part_document(document, "c"), (2, 3), "cmd 2'")
    assert [r["method"] for r in again["rows"]] == ["a"] * n + ["c"] * n   # replaced
    assert json.loads(out.read_text()) == again
    suite.validate(again)
    with pytest.raises(ValueError, match="another --out"):
        parts_module.add_part(out, _part_document(document, "a"), (1, 4), "cmd")
    parts_module.write_results(again, results)
    parts_module.write_results(again, results)                # rebuilt, not appended
    text = results.read_text()
    assert text.startswith("# Results\n\nkept above\n")
    assert text.count("<!-- suite: full -->") == 1 and text.count("| model |") == 1
    assert "not run yet: part 3 of 3" in text and "`cmd 2'`" in text
    assert "pytorch_grad_cam over jaxcam" in text
    assert not list(tmp_path.glob(".*.tmp"))                  # no temporary left behind


def test_eigen_maps_differ_from_pytorch_grad_cams_by_the_sign_alone():
    """benchmarks/eigen_sign.py: with pytorch-grad-cam's principal component flipped by
    jaxcam's sign rule, every image's Eigen-CAM and Eigen-Grad-CAM map agrees with
    jaxcam's (the suite's agreement column compares them as they are)."""
    from benchmarks import eigen_sign

    rows = eigen_sign.run("resnet18", "layer4", 224, 2)          # 7 x 7 maps
    assert set(rows) == {"eigen_cam", "eigen_grad_cam"}
    for as_is, signed in rows.values():
        assert len(as_is) == len(signed) == 2
        assert min(signed) > 0.999, signed
        for before, after in zip(as_is, signed):     # a map either agrees or is flipped
            assert before > 0.999 or before < 0, as_is


def test_the_peers_run_only_at_the_layer_they_hook():
    """The PyTorch references hook layer4: a case at another layer has no peer rows (its
    maps would be another layer's), and eigen_sign says so."""
    from benchmarks import eigen_sign

    assert suite.Setup("resnet18", "layer3", 32).torch_model is None
    assert suite.Setup("resnet18", "layer4", 32).torch_model is not None
    with pytest.raises(ValueError, match="layer4"):
        eigen_sign.run("resnet18", "layer3", 32, 1)
