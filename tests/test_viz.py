"""Drawing maps back onto the original photo, and the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import jaxcam
from jaxcam import viz

LITE0 = jaxcam.models.info("efficientnet_lite0").preprocess


def test_map_covers_exactly_the_centre_crop():
    shape = (300, 451, 3)
    top, left, rh, rw = LITE0.crop_box(300, 451)           # (16, 80, 256, 384)
    _, inside = viz.to_original(np.ones((7, 7)), shape, LITE0)
    rows, cols = np.nonzero(inside)
    sy, sx = 300 / rh, 451 / rw
    assert abs(rows.min() - top * sy) <= 1 and abs(rows.max() + 1 - (top + 224) * sy) <= 1
    assert abs(cols.min() - left * sx) <= 1 and abs(cols.max() + 1 - (left + 224) * sx) <= 1


def test_hot_spot_lands_where_the_model_saw_it():
    cam = np.zeros((224, 224), np.float32)
    cam[100:124, 40:64] = 1.0                                # centre (111.5, 51.5) in the crop
    top, left, rh, rw = LITE0.crop_box(300, 451)
    on_photo, _ = viz.to_original(cam, (300, 451), LITE0)
    ys, xs = np.nonzero(on_photo > 0.5)
    expected_y = (top + 111.5 + 0.5) * 300 / rh - 0.5
    expected_x = (left + 51.5 + 0.5) * 451 / rw - 0.5
    assert abs(ys.mean() - expected_y) < 1 and abs(xs.mean() - expected_x) < 1


def test_without_preprocess_the_map_spans_the_photo():
    on_photo, inside = viz.to_original(np.eye(4), (40, 60))
    assert inside.all() and on_photo.shape == (40, 60)
    assert on_photo[0, 0] > 0.9 and on_photo[0, -1] < 0.1


def test_overlay_blends_inside_the_crop_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    out = viz.overlay(image, np.full((7, 7), 1.0), alpha=0.5, preprocess=LITE0)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:5], image[:5])           # above the crop: untouched
    np.testing.assert_array_equal(out[:, :40], image[:, :40])   # left of the crop
    red = viz.heatmap(np.ones((1, 1)))[0, 0]
    expected = np.round(0.5 * image[150, 225].astype(float) + 0.5 * red)
    np.testing.assert_allclose(out[150, 225], expected, atol=1)


def test_overlay_in_row_blocks_equals_the_whole_photo_blend():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(1500, 1400, 3), dtype=np.uint8)  # > 1 block of rows
    cam = rng.random((14, 14)).astype(np.float32)
    on_photo, inside = viz.to_original(cam, image.shape, LITE0)
    blend = 0.6 * image.astype(np.float64) + 0.4 * viz.heatmap(on_photo)
    expected = np.where(inside[..., None], np.round(blend), image)
    out = viz.overlay(image, cam, alpha=0.4, preprocess=LITE0)
    assert np.abs(out.astype(np.int64) - expected).max() <= 1


def test_heatmap_colours_and_errors():
    hot, cold = viz.heatmap(np.array([[1.0, 0.0]]))[0]
    assert hot[0] > hot[2] and cold[2] > cold[0]                 # jet: red high, blue low
    with pytest.raises(ValueError, match="unknown colormap"):
        viz.heatmap(np.zeros((2, 2)), colormap="rainbow-ish")
    with pytest.raises(ValueError, match=r"maps\[i\]"):
        viz.overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        viz.heatmap(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="RGB uint8"):
        viz.overlay(np.zeros((4, 4)), np.zeros((4, 4)))


def test_write_png_round_trip_and_no_partial_files(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    path = viz.write_png(tmp_path / "sub" / "a.png", image)
    np.testing.assert_array_equal(viz.read_image(path), image)
    with pytest.raises(ValueError):
        viz.write_png(tmp_path / "b.png", np.zeros((5, 7), np.float32))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.png"]
    with pytest.raises(FileNotFoundError, match="no image"):
        viz.read_image(tmp_path / "missing.png")


def _jaxcam(*args, cwd):
    return subprocess.run([sys.executable, "-m", "jaxcam.cli", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_demo_writes_overlays_of_the_original_photo(tmp_path):
    run = _jaxcam("demo", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "282" in run.stdout and "tiger cat" in run.stdout
    written = sorted((tmp_path / "jaxcam-demo").glob("*.png"))
    methods = ("ablation_cam", "eigen_cam", "grad_cam", "grad_cam_pp", "grad_cam_pp-exact",
               "layer_cam", "smooth_grad_cam_pp", "xgrad_cam")
    assert [p.name for p in written] == sorted(
        [f"chelsea_{m}_class282.png" for m in methods] + ["chelsea_grid_class282.png"])
    for p in written:
        assert str(p.resolve()) in run.stdout
        if "grid" not in p.name:
            assert viz.read_image(p).shape == (300, 451, 3)
    grid = viz.read_image(tmp_path / "jaxcam-demo" / "chelsea_grid_class282.png")
    assert grid.shape[1] == len(methods) * (round(451 * 224 / 300) + 8)


@pytest.mark.slow
def test_explain_errors_are_clear_and_write_nothing(tmp_path, assets):
    run = _jaxcam("explain", str(assets / "coffee.png"), "--class", "1000", "--out", "o",
                  cwd=tmp_path)
    assert run.returncode == 2 and "out of range" in run.stderr and "(0..999)" in run.stderr
    run = _jaxcam("explain", "nope.jpg", cwd=tmp_path)
    assert run.returncode == 2 and "nope.jpg: no such file or folder" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_compare_command_writes_overlays_and_statistics(tmp_path, assets):
    import json

    run = _jaxcam("compare", str(assets / "coffee.png"), "--link", "softmax", "--n-samples",
                  "2", "--out", "c", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert files == [f"coffee_softmax_class967_{n}" for n in
                     ("approx.png", "difference.png", "exact.png", "smooth_approx.png",
                      "smooth_difference.png", "smooth_exact.png", "stats.json")]
    stats = json.loads((tmp_path / "c" / "coffee_softmax_class967_stats.json").read_text())
    assert stats["class"] == 967 and stats["link"] == "softmax"
    assert -1 <= stats["spearman"] <= 1 and 0 <= stats["iou_top20"] <= 1
    assert stats["max_alpha_diff"] > 0
    smooth = stats["smooth"]                     # Smooth Grad-CAM++, exact vs closed form
    assert set(smooth) == {"n_samples", "seed", "max_abs_map_difference", "spearman",
                           "relative_l2", "iou_top20"}
    assert smooth["n_samples"] == 2 and -1 <= smooth["spearman"] <= 1
