"""The study's EfficientNet-Lite0 images: views and mosaics of the bundled photos with
their ground-truth boxes, and the part's records on the real weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.study import lite0


def _coffee():
    return next(p for p in lite0._photos() if p["class"] == 967)


def test_a_whole_view_maps_the_box_by_hand():
    """coffee.png is 600 x 400: the whole view is the square x 100..500, scaled by
    224 / 400 = 0.56, so the box (170, 15, 411, 306) lands on columns 39..174 (70 * 0.56 =
    39.2, 311 * 0.56 = 174.16) and rows 8..171 (8.4, 171.36), and mirrored on 50..185."""
    photo = _coffee()
    assert photo["image"].shape == (400, 600, 3)
    image, box = lite0.view(photo, 1.0, 0.5, 0.5, False, 224)
    rows, cols = np.nonzero(box)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (8, 171, 39, 174)
    assert box.sum() == (171 - 8) * (174 - 39)
    mirrored_image, mirrored = lite0.view(photo, 1.0, 0.5, 0.5, True, 224)
    _, cols = np.nonzero(mirrored)
    assert (cols.min(), cols.max() + 1) == (224 - 174, 224 - 39)
    np.testing.assert_array_equal(mirrored_image, image[:, ::-1])


def test_mosaic_boxes_lie_in_their_own_photos_tiles():
    """Each mosaic is explained once per class present; that class's ground truth never
    reaches into a tile of the other photo, and every tile of its photo holds some."""
    data = lite0.group("mosaics")
    assert len(data) == 2 * len(lite0.ARRANGEMENTS)
    classes = [p["class"] for p in lite0._photos()]
    for i in range(len(data)):
        arrangement = lite0.ARRANGEMENTS[i // 2]
        which = classes.index(int(data.labels[i]))
        for t, photo in enumerate(arrangement):
            r, c = divmod(t, 2)
            tile = data.boxes[i, r * 112:(r + 1) * 112, c * 112:(c + 1) * 112]
            assert tile.any() == (photo == which)
        np.testing.assert_array_equal(data.images[i], data.images[i - i % 2])


def test_photos_alternate_and_annotations_name_the_bundled_photos():
    data = lite0.group("photos")
    notes = json.loads(lite0.ANNOTATIONS.read_text())["photos"]
    assert set(notes) == {"chelsea.png", "coffee.png"}
    assert list(data.labels[:4]) == [282, 967, 282, 967]
    assert len(data) == 2 * len(lite0.VIEWS) and data.boxes[1].mean() < 0.9


@pytest.mark.slow
def test_quick_lite0_part_scores_real_weights(tmp_path):
    """Two images a group, one method: every metric in range, the true class's
    probability recorded, and the report's Lite0 section written."""
    from benchmarks.study.__main__ import main
    from benchmarks.study import scoring

    assert main(["--quick", "--out", str(tmp_path), "--part", "lite0", "--images", "2",
                 "--methods", "grad_cam"]) == 0
    records = scoring.Records(tmp_path / "lite0.jsonl").read()
    assert {(r["split"], r["index"]) for r in records} == {
        (g, i) for g in lite0.GROUPS for i in range(2)}
    for r in records:
        assert 0 <= r["pointing_game"] <= 1 and 0 <= r["energy_in_box"] <= 1
        assert 0 <= r["deletion"] <= 1 and 0 <= r["insertion"] <= 1
        assert 0 < r["probability"] <= 1 and r["seconds_per_image"] > 0
    photos = [r for r in records if r["split"] == "photos"]
    assert photos[0]["probability"] > 0.2           # the cat, whole: the model sees a cat
    text = (tmp_path / "STUDY.md").read_text()
    assert "## Every method on EfficientNet-Lite0 with real photos" in text
