"""jaxcam.datasets.shapes: deterministic, masks inside tight boxes, labels that match what
is drawn (read back by an independent contour analysis)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from jaxcam.datasets import shapes as S


@pytest.mark.parametrize("split", S.SPLITS)
def test_generation_is_deterministic_and_image_i_does_not_depend_on_n(split):
    a = S.generate(12, split=split, seed=3)
    b = S.generate(12, split=split, seed=3)
    for field in ("images", "labels", "target_masks", "classes", "masks", "boxes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    tail = S.generate(4, split=split, seed=3, start=8)
    np.testing.assert_array_equal(tail.images, a.images[8:])
    np.testing.assert_array_equal(tail.boxes, a.boxes[8:])
    other = S.generate(12, split=split, seed=4)
    assert not np.array_equal(other.images, a.images)


@pytest.mark.parametrize("split, size", [("single", 64), ("multi_instance", 64),
                                         ("multi_class", 128)])
def test_masks_are_non_empty_inside_tight_boxes_and_targets_are_the_labelled_objects(
        split, size):
    d = S.generate(200, split=split, size=size, seed=0)
    counts = (d.classes >= 0).sum(1)
    want = {"single": (1, 1), "multi_instance": (2, 4), "multi_class": (2, 2)}[split]
    assert counts.min() >= want[0] and counts.max() <= want[1]
    if split == "multi_instance":
        assert counts.max() > 2                               # more than two, sometimes
    for i in range(len(d)):
        for j in range(counts[i]):
            m, (y0, x0, y1, x1) = d.masks[i, j], d.boxes[i, j]
            assert m.any(), (i, j)
            inside = np.zeros_like(m)
            inside[y0:y1, x0:x1] = True
            assert not (m & ~inside).any()                    # inside its box
            assert m[y0].any() and m[y1 - 1].any() and m[:, x0].any() and m[:, x1 - 1].any()
            np.testing.assert_array_equal(d.images[i][m], np.broadcast_to(
                d.images[i][m][0], d.images[i][m].shape))   # drawn in one colour, unoccluded
        assert not (d.masks[i, counts[i]:]).any() and (d.boxes[i, counts[i]:] == -1).all()
        overlap = d.masks[i, :counts[i]].sum(0)
        assert overlap.max() <= 1                             # objects never overlap
        labelled = d.classes[i] == d.labels[i]
        np.testing.assert_array_equal(d.target_masks[i], d.masks[i][labelled].any(0))
        if split == "multi_class":
            assert labelled.sum() == 1 and len(set(d.classes[i, :2])) == 2
        if split == "multi_instance":
            assert (d.classes[i, :counts[i]] == d.labels[i]).all()


def _read_back(mask: np.ndarray) -> str:
    """The class of a drawn mask by contour analysis alone: a hole makes a ring; the
    solidity (area over convex hull) separates the concave cross and star; the corners
    of the outline separate triangle, square and circle; the concavities, cross (4) from
    star (5)."""
    m = mask.astype(np.uint8)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if len(contours) > 1 and (hierarchy[0, :, 3] >= 0).any():
        return "ring"
    outline = max(contours, key=cv2.contourArea)
    hull = cv2.convexHull(outline)
    solidity = cv2.contourArea(outline) / cv2.contourArea(hull)
    if solidity < 0.85:
        defects = cv2.convexityDefects(outline, cv2.convexHull(outline, returnPoints=False))
        depth = np.zeros(0) if defects is None else defects.reshape(-1, 4)[:, 3] / 256.0
        deep = int((depth > 0.15 * np.sqrt(cv2.contourArea(hull))).sum())
        return "cross" if deep == 4 else "star" if deep == 5 else f"concave {deep}"
    corners = len(cv2.approxPolyDP(hull, 0.04 * cv2.arcLength(hull, True), True))
    return {3: "triangle", 4: "square"}.get(corners, "circle" if corners > 5 else
                                            f"{corners} corners")


def test_labels_match_the_drawn_shapes():
    d = S.generate(240, split="single", size=128, seed=1)
    read = [_read_back(d.target_masks[i]) for i in range(len(d))]
    wrong = [(i, S.CLASSES[d.labels[i]], r) for i, r in enumerate(read)
             if r != S.CLASSES[d.labels[i]]]
    assert not wrong, wrong[:10]
    assert set(read) == set(S.CLASSES)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown split"):
        S.generate(1, split="double")
    with pytest.raises(ValueError, match="at least 32"):
        S.generate(1, size=16)
    with pytest.raises(ValueError, match=">= 0"):
        S.generate(-1)
