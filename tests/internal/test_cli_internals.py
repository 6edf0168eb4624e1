"""The command line's helpers (jaxcam/cli/_common.py): the compilation cache folder it
refuses (hardening defect 12) and a --layer given twice."""

from __future__ import annotations

import pytest

from jaxcam.cli._common import layer_names, private_folder


def test_a_compilation_cache_others_can_write_is_refused(tmp_path):
    fresh = tmp_path / "new" / "xla"
    private_folder(fresh)
    assert fresh.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared" / "xla"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    with pytest.raises(ValueError, match="writable by other users.*--no-compile-cache"):
        private_folder(shared)


def test_a_layer_given_twice_is_refused():
    assert layer_names("resnet18", "layer3, layer4") == ["layer3", "layer4"]
    with pytest.raises(ValueError, match="--layer names layer4 more than once"):
        layer_names("resnet18", "layer4,layer3,layer4")
