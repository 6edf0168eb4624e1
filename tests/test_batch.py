"""jaxcam.batch's parts without a model: finding photos, method specs, the results file."""

from __future__ import annotations

import json

import pytest

from jaxcam import batch


def test_find_images_walks_folders_and_names_outputs_uniquely(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/x.PNG", "a/x.jpg", "a/deep/y.tiff", "a/notes.txt", "a/z.webp",
                 "loose.bmp"):
        (tmp_path / name).write_bytes(b"")
    photos = batch.find_images([tmp_path / "a", tmp_path / "loose.bmp", tmp_path / "a"])
    assert [p.path.relative_to(tmp_path).as_posix() for p in photos] == [
        "a/deep/y.tiff", "a/x.PNG", "a/x.jpg", "a/z.webp", "loose.bmp"]   # each once
    assert [p.name for p in photos] == ["deep/y", "x", "x_jpg", "z", "loose"]
    with pytest.raises(ValueError, match="missing: no such file or folder"):
        batch.find_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no photos .*found in"):
        batch.find_images([tmp_path / "empty"])


def test_parse_methods_options_and_errors():
    specs = batch.parse_methods("grad_cam, grad_cam_pp:exact,smooth_grad_cam_pp",
                                link="softmax", derivatives="approx")
    assert [(s.name, dict(s.options), s.label) for s in specs] == [
        ("grad_cam", {"link": "softmax"}, "grad_cam"),
        ("grad_cam_pp", {"link": "softmax", "derivatives": "exact"}, "grad_cam_pp-exact"),
        ("smooth_grad_cam_pp", {"link": "softmax", "derivatives": "approx"},
         "smooth_grad_cam_pp")]
    assert dict(batch.parse_methods("eigen_cam", link="exp")[0].options) == {}  # no link
    hash(specs)                                           # a static part of the program
    for text, message in [("gradcam", "did you mean grad_cam"),
                          ("grad_cam_pp:precise", "'exact' or 'approx'"),
                          ("layer_cam:exact", "no higher-order derivatives"),
                          (" , ", "no method given"),
                          ("grad_cam,grad_cam", "given twice")]:
        with pytest.raises(ValueError, match=message):
            batch.parse_methods(text)


def test_results_file_resumes_after_a_cut_line(tmp_path):
    path = tmp_path / "out" / batch.results_name()
    writer = batch.JsonLines(path, append=False)
    writer.close()
    assert not path.exists()                              # nothing explained: no file
    writer = batch.JsonLines(path, append=False)
    writer.write({"path": "/a.png", "class": 1})
    writer.write({"path": "/b.png", "error": "truncated"})
    writer.close()
    with open(path, "a") as f:
        f.write('{"path": "/c.p')                         # a run killed mid-line
    shard = tmp_path / "out" / batch.results_name(1, 2)
    assert shard.name == "results-00001-of-00002.jsonl"
    shard.write_text(json.dumps({"path": "/d.png"}) + "\n[1, 2]\n")
    assert batch.done_paths(tmp_path / "out") == {"/a.png", "/d.png"}
    writer = batch.JsonLines(path, append=True)
    writer.write({"path": "/c.png"})
    writer.close()
    lines = path.read_text().splitlines()
    assert lines[-2] == '{"path": "/c.p' and json.loads(lines[-1]) == {"path": "/c.png"}
    assert batch.done_paths(tmp_path / "out") == {"/a.png", "/c.png", "/d.png"}
