"""The README's code for your own Flax model, Vision Transformers and heads with any
output runs as written (each section's Python blocks in order, in one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTIONS = ("Your own Flax model", "Vision Transformers", "Segmentation, detection, embeddings",
            "Scoring maps in Python")


def _blocks(title: str) -> list[str]:
    text = README.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n## ", start)
    nxt = text.find("\n### ", start + 1)
    end = min(e for e in (end, nxt, len(text)) if e > 0)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def _run(*titles) -> dict:
    namespace: dict = {}
    for title in titles:
        blocks = _blocks(title)
        assert blocks, title
        for code in blocks:
            exec(compile(code, f"README.md: {title}", "exec"), namespace)
    return namespace


def test_your_own_flax_model_section_runs():
    ns = _run(SECTIONS[0])
    assert np.asarray(ns["maps"]).shape == (4, 32, 32)
    assert np.asarray(ns["exact"]).shape == (4, 32, 32)
    assert np.isfinite(np.asarray(ns["fused"])).all()


def test_segmentation_detection_embeddings_section_runs():
    ns = _run(SECTIONS[0], SECTIONS[2])
    assert np.asarray(ns["maps"]).shape == (4, 32, 32)
    assert np.abs(np.asarray(ns["maps"])).max() > 0


@pytest.mark.slow
def test_vision_transformers_section_runs():
    ns = _run(SECTIONS[0], SECTIONS[1])
    assert np.asarray(ns["maps"]).shape == (1, 224, 224)


def test_scoring_maps_section_runs():
    """On the real Lite0 weights and the bundled photo: deleting in the map's order loses
    the class sooner than in the reverse order, and the map points into the cat's box."""
    ns = _run(SECTIONS[3])
    assert float(ns["deletion"][0]) < float(ns["reverse"][0])
    assert 0.0 < float(ns["insertion"][0]) < 1.0
    assert np.isfinite(float(ns["road"][0]))
    assert float(ns["hit"][0]) == 1.0
    assert 0.0 <= float(ns["drop"][0]) <= 1.0


def test_the_package_section_names_every_module():
    """"The package" lists every module and folder of jaxcam/ and pretrained_ports/ (a
    folder by itself, a module of the top level by its file), and nothing that is gone."""
    root = README.parent
    text = README.read_text()
    section = text[text.index("## The package\n"):text.index("\n## ", text.index("## The package\n") + 1)]
    listed = set(re.findall(r"^\| `([^|]+)` \|", section, flags=re.M))
    named = {p.strip().strip("`") for row in listed for p in row.split("`, `")}
    for path in named:
        assert (root / path).exists(), f"README lists {path}, which does not exist"
    present = {"pretrained_ports/"}
    for entry in (root / "jaxcam").iterdir():
        if entry.name == "__pycache__":
            continue
        present.add(f"jaxcam/{entry.name}/" if entry.is_dir() else f"jaxcam/{entry.name}")
    assert present == named, (present - named, named - present)
