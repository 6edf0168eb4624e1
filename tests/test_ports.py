"""Conversion tables, reports, the msgpack store, the cache and the command line."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxcam
import pretrained_ports
from pretrained_ports import ConversionError


def _fake_state_dict(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A PyTorch-layout state_dict with the right names and shapes, from the model's shapes."""
    rng = np.random.default_rng(seed)
    shapes = jaxcam.models.variable_shapes(name)
    out = {}
    suffix = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean",
              "var": "running_var"}
    for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
        keys = [p.key for p in path]
        shape = leaf.shape
        if keys[-1] == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
        out[".".join(keys[1:-1] + [suffix[keys[-1]]])] = rng.normal(size=shape).astype(np.float32)
        if keys[-1] == "mean":
            out[".".join(keys[1:-1] + ["num_batches_tracked"])] = np.array(7)
    return out


def test_conversion_layouts():
    sd = _fake_state_dict("resnet18")
    v = pretrained_ports.convert("resnet18", sd, jaxcam.models.variable_shapes("resnet18"))
    np.testing.assert_array_equal(v["params"]["layer2.0"]["downsample.0"]["kernel"],
                                  sd["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(v["params"]["fc"]["kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(v["params"]["bn1"]["scale"], sd["bn1.weight"])
    np.testing.assert_array_equal(v["batch_stats"]["layer4.1"]["bn2"]["var"],
                                  sd["layer4.1.bn2.running_var"])


def test_vgg_classifier_reads_nchw_flatten():
    info = jaxcam.models.info("vgg11")
    sd = _fake_state_dict("vgg11")
    v = pretrained_ports.convert("vgg11", sd, jaxcam.models.variable_shapes("vgg11"),
                                 dict(info.nchw_flatten))
    w_torch = sd["classifier.0.weight"]            # (4096, c*49 + h*7 + w)
    w_flax = v["params"]["classifier.0"]["kernel"]  # (h*7*512 + w*512 + c, 4096)
    for c, h, w in [(0, 0, 0), (5, 1, 3), (511, 6, 6), (100, 6, 0)]:
        np.testing.assert_array_equal(w_flax[h * 7 * 512 + w * 512 + c], w_torch[:, c * 49 + h * 7 + w])


def test_report_names_missing_unexpected_and_misshapen():
    sd = _fake_state_dict("resnet18")
    del sd["layer1.0.conv1.weight"]
    sd["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    sd["fc.weight"] = np.zeros((10, 512), np.float32)
    report = pretrained_ports.check("resnet18", sd, jaxcam.models.variable_shapes("resnet18"))
    assert not report.ok
    assert report.missing == ("layer1.0.conv1.weight",)
    assert report.unexpected == ("layer9.0.conv1.weight",)
    assert report.misshapen == (("fc.weight", (10, 512), (1000, 512)),)
    with pytest.raises(ConversionError, match=r"(?s)missing keys.*layer1\.0\.conv1\.weight.*"
                                              r"unexpected.*layer9.*misshapen fc\.weight"):
        pretrained_ports.convert("resnet18", sd, jaxcam.models.variable_shapes("resnet18"))


def test_wrong_model_checkpoint_is_reported():
    sd = _fake_state_dict("resnet18")
    report = pretrained_ports.check("resnet50", sd, jaxcam.models.variable_shapes("resnet50"))
    assert report.missing and report.misshapen and "different model" in str(report)


def test_data_parallel_prefix_is_stripped():
    sd = {f"module.{k}": v for k, v in _fake_state_dict("resnet18").items()}
    assert pretrained_ports.check("resnet18", sd, jaxcam.models.variable_shapes("resnet18")).ok


def test_store_round_trip_and_checks(tmp_path):
    variables = jaxcam.models.init_variables("resnet18", seed=4)
    path = pretrained_ports.save_variables(tmp_path / "r18.msgpack", variables, model="resnet18")
    back = pretrained_ports.load_variables(path, model="resnet18")
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConversionError, match="not 'resnet34'"):
        pretrained_ports.load_variables(path, model="resnet34")
    (tmp_path / "junk.msgpack").write_bytes(b"\x00junk")
    with pytest.raises(pretrained_ports.CheckpointError, match="not a converted"):
        pretrained_ports.load_variables(tmp_path / "junk.msgpack", model="resnet18")
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


def test_checkpoint_is_converted_once_and_cached(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXCAM_CACHE", str(cache))
    sd = _fake_state_dict("resnet18")
    ckpt = tmp_path / "resnet18.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, ckpt)
    first = jaxcam.models.load("resnet18", weights=ckpt)
    cached = list(cache.glob("resnet18-*.msgpack"))
    assert len(cached) == 1
    calls = []
    monkeypatch.setattr("pretrained_ports._store.read_checkpoint", lambda p: calls.append(p))
    second = jaxcam.models.load("resnet18", weights=ckpt)
    assert calls == []  # served from the cache
    np.testing.assert_array_equal(first.variables["params"]["fc"]["kernel"],
                                  second.variables["params"]["fc"]["kernel"])


def test_command_line_convert(tmp_path):
    torch = pytest.importorskip("torch")
    sd = _fake_state_dict("resnet18")
    ckpt = tmp_path / "resnet18-f37072fd.pth"
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, ckpt)
    out = tmp_path / "resnet18.msgpack"
    run = subprocess.run([sys.executable, "-m", "pretrained_ports", "convert", "resnet18",
                          str(ckpt), "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "resnet18" in run.stdout and out.is_file()
    split = jaxcam.models.load("resnet18", weights=out)
    np.testing.assert_array_equal(split.variables["params"]["fc"]["kernel"], sd["fc.weight"].T)
    bad = subprocess.run([sys.executable, "-m", "pretrained_ports", "convert", "resnet50",
                          str(ckpt), "-o", str(tmp_path / "x.msgpack")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not match resnet50" in bad.stderr
    assert not (tmp_path / "x.msgpack").exists()
