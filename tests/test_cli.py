"""The command line: weights it refuses to guess, one-line errors, outputs that survive a
closed pipe, all-or-none writes, and file permissions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import pytest

from jaxcam import viz


ASSETS = Path(__file__).resolve().parents[1] / "jaxcam" / "assets"


def _jaxcam(*args, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "jaxcam.cli", *args], cwd=cwd,
                          capture_output=True, text=True, **kwargs)


def _one_error_line(run) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxcam: error: "), run.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["explain", "compare"])
def test_a_model_without_bundled_weights_needs_weights(tmp_path, command):
    run = _jaxcam(command, str(ASSETS / "coffee.png"), "--model", "resnet50", cwd=tmp_path)
    line = _one_error_line(run)
    assert "--weights" in line and ".pth" in line and "--weights random" in line
    assert "python -m pretrained_ports convert resnet50" in line
    assert not any(tmp_path.iterdir())


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    run = _jaxcam("explain", str(ASSETS / "coffee.png"), "--model", "resnet18",
                  "--weights", "garbage.pth", cwd=tmp_path)
    assert "garbage.pth" in _one_error_line(run)
    data = (ASSETS / "coffee.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    line = _one_error_line(_jaxcam("explain", "cut.png", cwd=tmp_path))
    assert "cut.png" in line and "truncated" in line
    line = _one_error_line(_jaxcam("explain", "--method", "grad_cma", "cut.png", cwd=tmp_path))
    assert "unknown method 'grad_cma'" in line and "did you mean grad_cam" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.png", "garbage.pth"]


def test_a_closed_pipe_does_not_stop_the_listing(tmp_path):
    run = subprocess.run(f"{sys.executable} -m jaxcam.cli models | head -1", shell=True,
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.stdout.startswith("vgg11") and len(run.stdout.splitlines()) == 1
    assert run.stderr == ""


@pytest.mark.slow
def test_random_weights_on_purpose_and_outputs_survive_a_closed_pipe(tmp_path):
    photo = tmp_path / "cat.png"
    cv2.imwrite(str(photo), cv2.imread(str(ASSETS / "chelsea.png")))
    process = subprocess.Popen(
        [sys.executable, "-m", "jaxcam.cli", "explain", str(photo), "--model", "resnet18",
         "--weights", "random", "--out", "o"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line: `| head -0`
    with process.stderr:
        stderr = process.stderr.read().decode()
    assert process.wait() == 0, stderr
    assert stderr.splitlines() == ["jaxcam: note: resnet18 has random weights (--weights "
                                   "random): its maps explain no learned features"]
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert len(written) == 3 and written[0].startswith("cat_grad_cam_class")
    assert written[1:] == ["results.jsonl", "run.json"]
    assert written[1] == "results.jsonl"


@pytest.mark.slow
def test_compare_writes_all_files_or_none(tmp_path):
    blocker = tmp_path / "c" / "coffee_softmax_class967_stats.json"
    blocker.mkdir(parents=True)  # a folder in the way of the last file
    run = _jaxcam("compare", str(ASSETS / "coffee.png"), "--out", "c", cwd=tmp_path)
    line = _one_error_line(run)
    assert "coffee_softmax_class967_stats.json" in line and "Is a directory" in line
    assert [p.name for p in (tmp_path / "c").iterdir()] == [blocker.name]  # no PNG, no temp


# --- the writers ---------------------------------------------------------------------

def test_all_or_none_puts_back_what_it_replaced(tmp_path):
    old = tmp_path / "old.txt"
    old.write_text("before")
    (tmp_path / "blocked").mkdir()
    # the folder in the way is met at the last rename: the first two files are in place by
    # then and must be undone (the old one restored, the new one and its folder removed)
    with pytest.raises(IsADirectoryError, match="cannot write .*blocked"):
        viz.write_all({old: b"after", tmp_path / "new" / "a.bin": b"1",
                              tmp_path / "blocked": b"2"})
    assert old.read_text() == "before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "old.txt"]
    assert viz.write_all({old: b"after", tmp_path / "new" / "a.bin": b"1"}) == [
        old, tmp_path / "new" / "a.bin"]
    assert old.read_text() == "after" and (tmp_path / "new" / "a.bin").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "blocked", "new",
                                                           "old.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    code = textwrap.dedent(f"""
        import os, sys
        os.umask({umask:#o})
        import numpy as np
        from jaxcam import viz
        viz.write_text("a.msgpack", "x")
        viz.write_png("b.png", np.zeros((2, 2, 3), np.uint8))
        viz.write_all({{"c.json": "{{}}", "d.png": np.zeros((2, 2, 3), np.uint8)}})
        """)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    for name in ("a.msgpack", "b.png", "c.json", "d.png"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.msgpack", "b.png", "c.json",
                                                          "d.png"]


@pytest.mark.slow
def test_evaluate_scores_photos_summarises_and_resumes(tmp_path):
    """Two bundled photos and a broken file: one JSON line each, the metrics equal to
    jaxcam.metrics on the same maps, a summary over the scored photos; a resumed run
    scores nothing again; a run where no photo can be read leaves nothing behind."""
    import jax
    import numpy as np

    import jaxcam
    from jaxcam import metrics as M

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        (photos / name).write_bytes((ASSETS / name).read_bytes())
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = ("evaluate", "photos", "--metrics", "average_drop,deletion", "--steps", "4",
            "--out", "scores")
    run = _jaxcam(*args, cwd=tmp_path)
    assert run.returncode == 1, run.stderr                       # one photo skipped
    records = [json.loads(line) for line in
               (tmp_path / "scores/results.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == ["broken.png", "chelsea.png",
                                                             "coffee.png"]
    summary = json.loads((tmp_path / "scores/summary.json").read_text())
    assert summary["grad_cam"]["deletion"]["n"] == 2
    assert "| grad_cam | 2 |" in (tmp_path / "scores/summary.md").read_text()

    split = jaxcam.models.load("efficientnet_lite0")
    chelsea = next(r for r in records if r["path"].endswith("chelsea.png"))
    x = split.preprocess(jaxcam.viz.read_image(photos / "chelsea.png"))[None]
    classes = np.array([chelsea["class"]])
    maps = jaxcam.grad_cam(split, x, classes)
    predict = jax.jit(M.predictor(split))
    want = {"average_drop": M.average_drop(predict, x, maps, classes),
            "deletion": M.deletion(predict, x, maps, classes, steps=4)}
    for name, value in want.items():
        assert chelsea["metrics"]["grad_cam"][name] == pytest.approx(float(value[0]),
                                                                     abs=1e-5)

    again = _jaxcam(*args, "--resume", cwd=tmp_path)
    assert again.returncode == 1, again.stderr                   # the broken one, again
    assert "scored 0 photos" in again.stdout
    lines = (tmp_path / "scores/results.jsonl").read_text().splitlines()
    assert len(lines) == 3                                       # one record per photo

    (tmp_path / "only_broken").mkdir()
    (tmp_path / "only_broken/x.png").write_bytes(b"nope")
    none = _jaxcam("evaluate", "only_broken", "--out", "empty", cwd=tmp_path)
    assert none.returncode == 2 and not (tmp_path / "empty").exists()
