"""``python -m benchmarks.study --quick``: its structure, resumption, and records that
agree with the library's own comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxcam
from jaxcam import models
from jaxcam.datasets import shapes


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The quick study's derivatives records (both --quick shapes networks trained: about
    80 s)."""
    from benchmarks.study.__main__ import main

    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXCAM_CACHE", str(cache))
        assert main(["--quick", "--out", str(out), "--images", "4",
                     "--part", "derivatives"]) == 0
    return cache, out


def _records(out):
    return [json.loads(line) for line in (out / "derivatives.jsonl").read_text().splitlines()]


def test_quick_study_writes_every_unit_and_a_report(study):
    from benchmarks.study import derivatives

    _, out = study
    records = _records(out)
    units = {(r["network"], r["method"], r["link"]) for r in records}
    assert units == {(n, m, link) for n in derivatives.NETWORKS
                     for m in ("grad_cam_pp", "smooth_grad_cam_pp") for link in derivatives.LINKS}
    assert len(records) == 4 * len(units)
    for r in records:
        assert set(r["exact"]) == set(r["approx"]) >= {"deletion", "insertion",
                                                       "pointing_game", "road_combined"}
        assert -1 <= r["spearman"] <= 1 and 0 <= r["probability"] <= 1
    text = (out / "STUDY.md").read_text()
    for heading in ("## Findings", "## Exact versus closed-form",
                    "### Where the difference comes from", "## Reproducibility"):
        assert heading in text
    assert "Run time of the records" in text and "derivatives " in text
    assert all(r["unit_seconds"] > 0 for r in records)


def test_a_rerun_continues_and_redoes_a_cut_unit(study, monkeypatch):
    from benchmarks.study.__main__ import main

    cache, out = study
    lines = (out / "derivatives.jsonl").read_text().splitlines()
    (out / "derivatives.jsonl").write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:20])
    monkeypatch.setenv("JAXCAM_CACHE", str(cache))
    assert main(["--quick", "--out", str(out), "--images", "4", "--part", "derivatives"]) == 0
    records = _records_tolerant(out)
    from benchmarks.study import scoring

    complete = scoring.Records(out / "derivatives.jsonl").read()
    assert len(complete) == len(lines)              # the cut unit was redone, nothing twice
    assert len(records) > len(complete)             # its first half stays, unused


def _records_tolerant(out):
    rows = []
    for line in (out / "derivatives.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def test_records_agree_with_compare_derivatives(study, monkeypatch):
    """The records' Spearman and weight changes recomputed from jaxcam's public API."""
    from benchmarks.study import derivatives, stats

    cache, out = study
    monkeypatch.setenv("JAXCAM_CACHE", str(cache))
    trained = models.train_shapes("shapes-smooth", quick=True)
    split = models.load("shapes-smooth", layer=derivatives.LAYER, weights=str(trained.path))
    data = shapes.generate(4, size=trained.config.size, seed=0, start=10**6)
    cmp = jaxcam.compare_derivatives(split, models.preprocess_batch(data.images),
                                     np.asarray(data.labels), link="softmax")
    changes = stats.weight_changes(cmp.weights_exact, cmp.weights_approx)
    rows = sorted((r for r in scoring_records(out) if r["network"] == "shapes-smooth"
                   and r["method"] == "grad_cam_pp" and r["link"] == "softmax"),
                  key=lambda r: r["index"])
    for i, r in enumerate(rows):
        assert r["spearman"] == pytest.approx(float(cmp.spearman[i]), abs=1e-5)
        assert r["sign_changes"] == pytest.approx(changes["sign_changes"][i])
        assert r["relative_l2"] == pytest.approx(changes["relative_l2"][i], rel=1e-4, abs=1e-9)


def scoring_records(out):
    from benchmarks.study import scoring

    return scoring.Records(out / "derivatives.jsonl").read()


def test_quick_groundtruth_and_sanity_parts(study, monkeypatch):
    """The other two parts on two methods: every unit written, the report's sections."""
    from benchmarks.study.__main__ import main
    from benchmarks.study import scoring

    cache, out = study
    monkeypatch.setenv("JAXCAM_CACHE", str(cache))
    for part in ("groundtruth", "sanity"):
        assert main(["--quick", "--out", str(out), "--part", part,
                     "--methods", "grad_cam,score_cam"]) == 0
    scored = scoring.Records(out / "groundtruth.jsonl").read()
    units = {(r["network"], r["split"], r["method"]) for r in scored}
    assert len(units) == 2 * 3 * 2 and all(0 <= r["pointing_game"] <= 1 for r in scored)
    checks = scoring.Records(out / "sanity.jsonl").read()
    assert {r["method"] for r in checks} == {"grad_cam", "score_cam"}
    assert {r["layer"] for r in checks} >= {"fc", "conv5", "conv1"}
    text = (out / "STUDY.md").read_text()
    assert "## Every method on the shapes networks" in text and "## Sanity check" in text


def test_jaxcam_study_runs_from_a_clone_and_says_so_elsewhere(tmp_path):
    """`jaxcam study` forwards to benchmarks.study from a clone's root; away from a clone
    it fails with one line that says where to run it."""
    import subprocess
    import sys
    from pathlib import Path

    code = "from jaxcam.cli import main; raise SystemExit(main(['study', '--help']))"
    root = Path(__file__).resolve().parents[1]
    here = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert here.returncode == 0 and "--part" in here.stdout
    away = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert away.returncode == 2
    assert "runs from a clone of the jaxcam repository" in away.stderr
    assert "Traceback" not in away.stderr


def test_records_time_each_units_latest_run(tmp_path):
    """A unit's run time is kept with its records; a unit run again counts once, with
    its latest time, and a cut run counts nothing."""
    from benchmarks.study import scoring

    records = scoring.Records(tmp_path / "part.jsonl")
    records.write("a", [{"v": 1}, {"v": 2}], seconds=3.0)
    records.write("b", [{"v": 1}], seconds=5.0)
    records.write("a", [{"v": 1}, {"v": 2}], seconds=4.0)
    with open(tmp_path / "part.jsonl", "a") as f:
        f.write('{"unit": "c", "unit_seconds": 100.0, "first": true, "last": false}\n')
    again = scoring.Records(tmp_path / "part.jsonl")
    assert again.done == {"a", "b"}
    assert again.seconds() == pytest.approx(9.0)
    assert len(again.read()) == 3
