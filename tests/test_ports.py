"""Conversion tables and reports, the msgpack store, the cache and the command line.

Real files throughout: state_dicts with the zoo's names and shapes (random values) are
written with ``torch.save`` and read back through ``pretrained_ports``. The cache and
command-line tests use efficientnet_lite0, the smallest zoo model (4.7 M values).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import jax
import msgpack
import numpy as np
import pytest
from flax import serialization

import jaxcam
import pretrained_ports
from pretrained_ports import CheckpointError, ConversionError
from pretrained_ports.__main__ import main

LITE = "efficientnet_lite0"


def _torch_shape(keys: list[str], shape: tuple[int, ...]) -> tuple[int, ...]:
    if keys[-1] == "kernel":
        return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
    return shape


def _fake_state_dict(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """A PyTorch-layout state_dict with the right names and shapes, from the model's shapes."""
    rng = np.random.default_rng(seed)
    shapes = jaxcam.models.variable_shapes(name)
    out = {}
    suffix = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean",
              "var": "running_var"}
    for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
        keys = [p.key for p in path]
        shape = _torch_shape(keys, leaf.shape)
        out[".".join(keys[1:-1] + [suffix[keys[-1]]])] = rng.standard_normal(shape, np.float32)
        if keys[-1] == "mean":
            out[".".join(keys[1:-1] + ["num_batches_tracked"])] = np.array(7)
    return out


def _random_variables(name: str, seed: int = 0) -> dict:
    """Variables of the model's shapes and dtypes, without compiling its init."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape, s.dtype),
                                  jaxcam.models.variable_shapes(name))


def _torch_save(state_dict: dict[str, np.ndarray], path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()},
               path)


def _assert_trees_equal(a, b) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """A real efficientnet_lite0 checkpoint file, its state_dict and its conversion."""
    sd = _fake_state_dict(LITE)
    path = tmp_path_factory.mktemp("lite") / "lite0.pth"
    _torch_save(sd, path)
    variables = pretrained_ports.convert(LITE, sd, jaxcam.models.variable_shapes(LITE))
    return path, sd, variables


@pytest.fixture(scope="module")
def lite_entry(lite, tmp_path_factory):
    """The file name and bytes of the cache entry of the ``lite`` checkpoint."""
    cache = tmp_path_factory.mktemp("lite-cache")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("JAXCAM_CACHE", str(cache))
        jaxcam.models.load_weights(LITE, lite[0])
    entry = _entry(cache)
    return entry.name, entry.read_bytes()


# --- conversion -------------------------------------------------------------------------

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
    (module, (c_, h_, w_)), = jaxcam.models.info("vgg11").nchw_flatten
    kernel = jaxcam.models.variable_shapes("vgg11")["params"][module]["kernel"]
    assert (module, (c_, h_, w_)) == ("classifier.0", (512, 7, 7))
    assert kernel.shape == (c_ * h_ * w_, 4096)
    # The same layout change on a small map (c, h, w) = (6, 3, 4): every value distinct.
    c_, h_, w_, out = 6, 3, 4, 5
    shapes = {"params": {module: {"kernel": jax.ShapeDtypeStruct((c_ * h_ * w_, out),
                                                                 np.float32)}}}
    w_torch = np.arange(out * c_ * h_ * w_, dtype=np.float32).reshape(out, -1)
    v = pretrained_ports.convert("vgg11", {f"{module}.weight": w_torch}, shapes,
                                 {module: (c_, h_, w_)})
    w_flax = v["params"][module]["kernel"]  # (h*w*c + w*c + c, out)
    for c in range(c_):
        for h in range(h_):
            for w in range(w_):
                np.testing.assert_array_equal(w_flax[h * w_ * c_ + w * c_ + c],
                                              w_torch[:, c * h_ * w_ + h * w_ + w])


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
    assert report.mistyped == () and report.nonfinite == ()
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


def test_non_finite_tensors_are_all_named():
    sd = _fake_state_dict("resnet18")
    sd["conv1.weight"][0, 0, 0, 0] = np.nan
    sd["layer3.1.bn2.running_var"][5] = np.inf
    sd["fc.bias"][-1] = -np.inf
    sd["bn1.bias"] = sd["bn1.bias"].astype(np.float64)
    sd["bn1.bias"][0] = 1e300  # finite in float64, infinite as float32
    shapes = jaxcam.models.variable_shapes("resnet18")
    report = pretrained_ports.check("resnet18", sd, shapes)
    assert set(report.nonfinite) == {"conv1.weight", "layer3.1.bn2.running_var", "fc.bias",
                                     "bn1.bias"}
    assert not (report.missing or report.unexpected or report.misshapen or report.mistyped)
    with pytest.raises(ConversionError, match=r"non-finite values \(NaN or Inf\) in 4 tensors"):
        pretrained_ports.convert("resnet18", sd, shapes)


def test_non_float_tensors_are_mistyped_and_floats_converted():
    sd = _fake_state_dict("resnet18")
    sd["conv1.weight"] = sd["conv1.weight"].astype(np.int64)
    sd["bn1.weight"] = sd["bn1.weight"] > 0
    sd["fc.bias"] = sd["fc.bias"].astype(np.complex64)
    sd["layer1.0.bn1.bias"] = [0.0] * 64  # not an array at all
    shapes = jaxcam.models.variable_shapes("resnet18")
    report = pretrained_ports.check("resnet18", sd, shapes)
    assert set(report.mistyped) == {("conv1.weight", "int64", "float32"),
                                    ("bn1.weight", "bool", "float32"),
                                    ("fc.bias", "complex64", "float32"),
                                    ("layer1.0.bn1.bias", "list", "float32")}
    with pytest.raises(ConversionError, match="mistyped conv1.weight: checkpoint int64"):
        pretrained_ports.convert("resnet18", sd, shapes)

    # Other floats are cast; these values are exactly representable in float32.
    sd = _fake_state_dict("resnet18")
    half = sd["fc.weight"].astype(np.float16)
    sd["fc.weight"] = half
    sd["fc.bias"] = sd["fc.bias"].astype(np.float64)
    v = pretrained_ports.convert("resnet18", sd, shapes)
    assert {x.dtype for x in jax.tree_util.tree_leaves(v)} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(v["params"]["fc"]["kernel"], half.astype(np.float32).T)
    np.testing.assert_array_equal(v["params"]["fc"]["bias"], sd["fc.bias"])


def test_non_finite_tensor_in_a_real_checkpoint_file(lite, tmp_path):
    _, sd, _ = lite
    sd = dict(sd, **{"_fc.weight": sd["_fc.weight"].copy()})
    sd["_fc.weight"][3, 4] = np.nan
    _torch_save(sd, tmp_path / "nan.pth")
    with pytest.raises(ConversionError, match=r"(?s)non-finite.*_fc\.weight"):
        jaxcam.models.convert_checkpoint(LITE, tmp_path / "nan.pth")



def test_conversion_passes_the_reading_budget_on(lite):
    path, _, variables = lite
    _assert_trees_equal(jaxcam.models.convert_checkpoint(LITE, path, max_bytes=2**30),
                        variables)
    with pytest.raises(pretrained_ports.CheckpointTooLargeError, match="max_bytes"):
        jaxcam.models.convert_checkpoint(LITE, path, max_bytes=path.stat().st_size // 2)

# --- msgpack files ----------------------------------------------------------------------

def test_store_round_trip_and_checks(tmp_path):
    variables = _random_variables("resnet18", seed=4)
    path = jaxcam.models.save_variables(tmp_path / "r18.msgpack", variables, model="resnet18")
    back = jaxcam.models.load_variables(path, model="resnet18")
    _assert_trees_equal(variables, back)
    with pytest.raises(ConversionError, match="not 'resnet34'"):
        jaxcam.models.load_variables(path, model="resnet34")
    with pytest.raises(FileNotFoundError):
        jaxcam.models.load_variables(tmp_path / "absent.msgpack", model="resnet18")
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


def test_save_refuses_variables_that_would_not_load(tmp_path):
    variables = _random_variables("resnet18")
    variables["params"]["fc"]["bias"][7] = np.nan
    with pytest.raises(ConversionError, match=r"non-finite.*params/fc/bias"):
        jaxcam.models.save_variables(tmp_path / "r18.msgpack", variables, model="resnet18")
    assert list(tmp_path.iterdir()) == []


# Target shapes of a model outside the zoo: the generic store needs no model registry.
TOY_SHAPES = {"params": {"dense": {"kernel": jax.ShapeDtypeStruct((3, 2), np.float32),
                                   "bias": jax.ShapeDtypeStruct((2,), np.float32)}}}


def _toy_variables(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"params": {"dense": {"kernel": rng.standard_normal((3, 2), np.float32),
                                 "bias": rng.standard_normal(2, np.float32)}}}


def test_generic_store_round_trip_with_shapes_and_metadata(tmp_path):
    variables = _toy_variables()
    path = pretrained_ports.save_variables(tmp_path / "sub" / "toy.msgpack", variables,
                                           TOY_SHAPES, model="toy", metadata={"source": "a"})
    assert path == tmp_path / "sub" / "toy.msgpack"
    payload = serialization.msgpack_restore(path.read_bytes())
    assert (payload["format"], payload["model"], payload["source"]) == (
        pretrained_ports.FORMAT, "toy", "a")
    _assert_trees_equal(pretrained_ports.load_variables(path, TOY_SHAPES, model="toy"),
                        variables)
    _assert_trees_equal(pretrained_ports.load_variables(path, TOY_SHAPES, model="toy",
                                                        metadata={"source": "a"}), variables)
    with pytest.raises(CheckpointError, match="records 'a' as 'source', not 'b'"):
        pretrained_ports.load_variables(path, TOY_SHAPES, model="toy", metadata={"source": "b"})
    with pytest.raises(CheckpointError, match="records nothing as 'other'"):
        pretrained_ports.load_variables(path, TOY_SHAPES, model="toy", metadata={"other": "a"})
    with pytest.raises(ConversionError, match="holds weights for 'toy', not 'other'"):
        pretrained_ports.load_variables(path, TOY_SHAPES, model="other")
    wider = {"params": {"dense": {"kernel": jax.ShapeDtypeStruct((3, 4), np.float32),
                                  "bias": jax.ShapeDtypeStruct((4,), np.float32)}}}
    with pytest.raises(ConversionError, match=r"misshapen params/dense/kernel"):
        pretrained_ports.load_variables(path, wider, model="toy")


def test_generic_store_refuses_bad_variables_and_metadata(tmp_path):
    variables = _toy_variables()
    variables["params"]["dense"]["bias"][0] = np.inf
    with pytest.raises(ConversionError, match=r"non-finite.*params/dense/bias"):
        pretrained_ports.save_variables(tmp_path / "t.msgpack", variables, TOY_SHAPES,
                                        model="toy")
    with pytest.raises(ValueError, match="'model' is reserved"):
        pretrained_ports.save_variables(tmp_path / "t.msgpack", _toy_variables(), TOY_SHAPES,
                                        model="toy", metadata={"model": "x"})
    with pytest.raises(TypeError, match="strings to strings"):
        pretrained_ports.save_variables(tmp_path / "t.msgpack", _toy_variables(), TOY_SHAPES,
                                        model="toy", metadata={"n": 3})
    assert list(tmp_path.iterdir()) == []


def test_generic_store_bounds_reads_by_the_target_shapes(tmp_path):
    path = pretrained_ports.save_variables(tmp_path / "t.msgpack", _toy_variables(),
                                           TOY_SHAPES, model="toy")
    with open(path, "ab") as f:
        f.truncate(path.stat().st_size + (2 << 20))  # past the slack of a 32-byte model
    with pytest.raises(CheckpointError, match="more than a converted file of this model"):
        pretrained_ports.load_variables(path, TOY_SHAPES, model="toy")


def _payload(model: str = "resnet18", **fields):
    return {"format": "jaxcam-variables-1", "model": model, **fields}


def _ndarray_ext(shape, dtype: str, data: bytes) -> msgpack.ExtType:
    """An array as flax's msgpack encodes it (ext type 1), with any declared header."""
    return msgpack.ExtType(1, msgpack.packb((shape, dtype, data)))


MALFORMED = {
    "garbage": b"\xc1" * 64,  # 0xc1 is never used by msgpack
    "empty": b"",
    "truncated": msgpack.packb(_payload(variables={"params": {}}))[:-9],
    "a list": msgpack.packb([1, 2, 3]),
    "a number": msgpack.packb(3),
    "no format": msgpack.packb({"model": "resnet18", "variables": {}}),
    "no model": msgpack.packb({"format": "jaxcam-variables-1", "variables": {}}),
    "no variables": msgpack.packb(_payload()),
    "format not a string": msgpack.packb({"format": 1, "model": "resnet18", "variables": {}}),
    "other format": msgpack.packb(_payload(variables={}) | {"format": "npz"}),
    "model not a string": msgpack.packb(_payload(variables={}) | {"model": ["resnet18"]}),
    "variables a list": msgpack.packb(_payload(variables=[1, 2])),
    "variables a string": msgpack.packb(_payload(variables="params")),
    "huge declared list": b"\xdd\xff\xff\xff\xff",
    "huge declared bytes": b"\x81\xa1x\xc6\xff\xff\xff\xf0abc",
    "huge declared array": msgpack.packb(
        _payload(variables={"a": _ndarray_ext((1 << 40, 1 << 20), "float32", b"\0" * 16)})),
    "object array": msgpack.packb(
        _payload(variables={"a": _ndarray_ext((2,), "O", b"\0" * 16)})),
    "unknown dtype": msgpack.packb(
        _payload(variables={"a": _ndarray_ext((2,), "notadtype", b"\0" * 8)})),
    "deep nesting": b"\x81\xa1a" * 5000 + b"\x80",
}


def _deep_variables(levels: int) -> bytes:
    tree: dict = {}
    node = tree
    for _ in range(levels):
        node["a"] = {}
        node = node["a"]
    return msgpack.packb(_payload(variables=tree))


MALFORMED["deep variables"] = _deep_variables(40)
MALFORMED["clashing names"] = msgpack.packb(_payload(variables={
    "params": {"fc": {"bias": 1.0}, "fc/bias": 2.0}}))


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_msgpack_files_raise_one_clear_line(tmp_path, kind):
    path = tmp_path / "w.msgpack"
    path.write_bytes(MALFORMED[kind])
    with pytest.raises((CheckpointError, ConversionError)) as info:
        jaxcam.models.load_weights("resnet18", path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message


def test_oversized_msgpack_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.msgpack"
    with open(path, "wb") as f:
        f.truncate(10**11)  # sparse: 100 GB declared, nothing on disk
    with pytest.raises(CheckpointError, match="more than a converted file of this model"):
        jaxcam.models.load_variables(path, model="resnet18")


def test_msgpack_variables_are_checked_like_a_conversion(tmp_path):
    variables = _random_variables("resnet18")
    params = variables["params"]
    del params["layer1.0"]["conv1"]["kernel"]                      # missing
    params["layer1.0"]["conv9"] = {"kernel": np.zeros(3, np.float32)}  # unexpected
    params["fc"]["kernel"] = params["fc"]["kernel"][:10]             # misshapen
    params["fc"]["bias"] = params["fc"]["bias"].astype(np.float64)   # mistyped
    params["bn1"]["scale"] = params["bn1"]["scale"].astype(np.int32)  # mistyped
    params["bn1"]["bias"] = "zeros"                                   # not an array
    params["conv1"]["kernel"] = {"nested": np.zeros(3, np.float32)}    # a tree, not an array
    variables["batch_stats"]["bn1"]["var"][0] = np.inf                # non-finite
    payload = {"format": "jaxcam-variables-1", "model": "resnet18",
               "variables": variables}
    path = tmp_path / "w.msgpack"
    path.write_bytes(serialization.msgpack_serialize(payload))
    with pytest.raises(ConversionError) as info:
        jaxcam.models.load_variables(path, model="resnet18")
    message = str(info.value)
    for expected in ["missing keys (2): params/conv1/kernel, params/layer1.0/conv1/kernel",
                     ("unexpected keys (2): params/conv1/kernel/nested, "
                      "params/layer1.0/conv9/kernel"),
                     ("misshapen params/fc/kernel: checkpoint (10, 1000), model expects "
                      "(512, 1000)"),
                     "mistyped params/bn1/bias: checkpoint str, model expects float32",
                     "mistyped params/bn1/scale: checkpoint int32",
                     "mistyped params/fc/bias: checkpoint float64",
                     "non-finite values (NaN or Inf) in 1 tensors: batch_stats/bn1/var"]:
        assert expected in message, message


# --- the cache --------------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("JAXCAM_CACHE", str(path))
    return path


def _entry(cache):
    (entry,) = cache.glob(f"{LITE}-*.msgpack")
    return entry


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_is_converted_once_and_cached(lite, cache):
    ckpt, _, reference = lite
    first = jaxcam.models.load_weights(LITE, ckpt)
    entry = _entry(cache)
    payload = serialization.msgpack_restore(entry.read_bytes())
    assert payload["source_sha256"] == _sha256(ckpt)
    before = entry.stat()
    second = jaxcam.models.load_weights(LITE, ckpt)
    after = entry.stat()
    # Served from the entry: a rebuild would have replaced it (a new inode).
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    _assert_trees_equal(first, reference)
    _assert_trees_equal(second, reference)


def _edit(change):
    """A damage that decodes the real entry, changes it and encodes it again."""
    def damage(raw: bytes) -> bytes:
        payload = serialization.msgpack_restore(raw)
        change(payload)
        return serialization.msgpack_serialize(payload)
    return damage


def _set_leaf(value_of):
    def change(payload):
        fc = payload["variables"]["params"]["_fc"]
        fc["bias"] = value_of(np.array(fc["bias"]))
    return _edit(change)


def _nan(bias):
    bias[3] = np.nan
    return bias


DAMAGES = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "empty": lambda raw: b"",
    "garbage": lambda raw: b"\xc1" + raw[1:],
    "not a dict": lambda raw: msgpack.packb([raw[:10]]),
    "no variables": _edit(lambda p: p.pop("variables")),
    "no format": _edit(lambda p: p.pop("format")),
    "old format": _edit(lambda p: p.update(format="jaxcam-variables-0")),
    "wrong types": _edit(lambda p: p.update(variables=[1, 2, 3])),
    "another model": _edit(lambda p: p.update(model="resnet18")),
    "hash mismatch": _edit(lambda p: p.update(source_sha256="0" * 64)),
    "no hash": _edit(lambda p: p.pop("source_sha256")),
    "missing leaf": _edit(lambda p: p["variables"]["params"]["_fc"].pop("bias")),
    "extra leaf": _edit(lambda p: p["variables"]["params"]["_fc"].update(
        extra=np.zeros(2, np.float32))),
    "wrong shape": _set_leaf(lambda b: b[:-1]),
    "wrong dtype": _set_leaf(lambda b: b.astype(np.float64)),
    "integers": _set_leaf(lambda b: b.astype(np.int32)),
    "not an array": _set_leaf(lambda b: "bias"),
    "non-finite": _set_leaf(_nan),
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_damaged_cache_entry_is_rebuilt(lite, lite_entry, cache, kind):
    ckpt, _, reference = lite
    name, pristine = lite_entry
    cache.mkdir()
    entry = cache / name
    entry.write_bytes(DAMAGES[kind](pristine))
    _assert_trees_equal(jaxcam.models.load_weights(LITE, ckpt), reference)
    # ... and the entry was replaced by a good one.
    payload = serialization.msgpack_restore(entry.read_bytes())
    assert payload["source_sha256"] == _sha256(ckpt)
    _assert_trees_equal(jaxcam.models.load_variables(entry, model=LITE), reference)


def test_directory_in_place_of_the_cache_entry_does_not_stop_loading(lite, lite_entry, cache):
    ckpt, _, reference = lite
    (cache / lite_entry[0]).mkdir(parents=True)
    _assert_trees_equal(jaxcam.models.load_weights(LITE, ckpt), reference)


def test_cache_follows_content_not_path_size_or_mtime(lite, cache, tmp_path):
    _, sd, reference = lite
    edited = dict(sd, **{"_fc.bias": sd["_fc.bias"] + 1})
    # Saved under the same file name (torch names the zip's records after it): same size.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _torch_save(sd, tmp_path / "a" / "w.pth")
    _torch_save(edited, tmp_path / "b" / "w.pth")
    path = tmp_path / "w.pth"
    shutil.copyfile(tmp_path / "a" / "w.pth", path)
    _assert_trees_equal(jaxcam.models.load_weights(LITE, path), reference)
    first = path.stat()

    shutil.copyfile(tmp_path / "b" / "w.pth", path)
    os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
    second = path.stat()
    assert (second.st_size, second.st_mtime_ns) == (first.st_size, first.st_mtime_ns)

    variables = jaxcam.models.load_weights(LITE, path)
    np.testing.assert_array_equal(variables["params"]["_fc"]["bias"], edited["_fc.bias"])
    assert len(list(cache.glob(f"{LITE}-*.msgpack"))) == 2  # one entry per content


def test_file_in_place_of_the_cache_folder_does_not_stop_loading(lite, cache):
    """An unusable cache (here a file where its folder should be: refused even to root)
    costs the conversion, never the load."""
    ckpt, _, reference = lite
    cache.write_bytes(b"not a folder")
    _assert_trees_equal(jaxcam.models.load_weights(LITE, ckpt), reference)
    assert cache.read_bytes() == b"not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_cache_does_not_stop_loading(lite, cache):
    ckpt, _, reference = lite
    cache.mkdir()
    cache.chmod(0o500)
    try:
        _assert_trees_equal(jaxcam.models.load_weights(LITE, ckpt), reference)
    finally:
        cache.chmod(0o700)


# --- the command line -------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrained_ports", *args],
                          check=False, capture_output=True, text=True, timeout=300)


def test_command_line_convert(lite, tmp_path):
    ckpt, sd, _ = lite
    out = tmp_path / "lite.msgpack"
    run = _cli("convert", LITE, str(ckpt), "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert LITE in run.stdout and out.is_file()
    variables = jaxcam.models.load_weights(LITE, out)
    np.testing.assert_array_equal(variables["params"]["_fc"]["kernel"], sd["_fc.weight"].T)

    (tmp_path / "taken").mkdir()
    bad = _cli("convert", LITE, str(ckpt), "-o", str(tmp_path / "taken"))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "a directory is in the way" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lite.msgpack", "taken"]


def test_command_line_help_has_examples(capsys):
    for args in (["--help"], ["convert", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out
        assert "python -m pretrained_ports convert resnet50 resnet50-0676ba61.pth" in out


def _cli_errors(tmp_path, lite_ckpt, lite_sd):
    """(arguments, output path that must not appear, what stderr must say) per error."""
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_bytes(b"x")
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x02garbage")
    inf = dict(lite_sd, **{"_conv_stem.weight": lite_sd["_conv_stem.weight"].copy()})
    inf["_conv_stem.weight"][0, 0, 0, 0] = np.inf
    _torch_save(inf, tmp_path / "inf.pth")
    out = str(tmp_path / "out.msgpack")
    ck = str(lite_ckpt)
    return {
        "directory in the way": (["convert", LITE, ck, "-o", str(tmp_path / "a_dir")],
                                 "a directory is in the way"),
        "path under a file": (["convert", LITE, ck, "-o", str(tmp_path / "a_file" / "o.msgpack")],
                              "a_file is a file, not a directory"),
        "missing checkpoint": (["convert", LITE, str(tmp_path / "absent.pth"), "-o", out],
                               "not found"),
        "garbage checkpoint": (["convert", LITE, str(tmp_path / "garbage.pth"), "-o", out],
                               "garbage.pth"),
        "unknown model": (["convert", "resnet1", ck, "-o", out], "unknown model 'resnet1'"),
        "wrong model": (["convert", "resnet18", ck, "-o", out],
                        "checkpoint does not match resnet18: missing keys"),
        "non-finite": (["convert", LITE, str(tmp_path / "inf.pth"), "-o", out],
                       "non-finite values (NaN or Inf) in 1 tensors: _conv_stem.weight"),
        "no output": (["convert", LITE, ck], "required: -o/--output"),
        "no command": ([], "required: command"),
    }


def test_command_line_errors_are_one_line_exit_2_and_leave_no_file(lite, tmp_path, capsys):
    cases = _cli_errors(tmp_path, lite[0], lite[1])
    before = sorted(tmp_path.rglob("*"))
    for kind, (args, says) in cases.items():
        try:
            rc = main(args)
        except SystemExit as e:  # argparse's usage errors
            rc = e.code
        err = capsys.readouterr().err
        assert rc == 2, kind
        assert err.startswith("error: ") and err.count("\n") == 1, (kind, err)
        assert says in err, (kind, err)
        assert sorted(tmp_path.rglob("*")) == before, kind  # no output, no temporary file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_command_line_unwritable_directory(lite, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert main(["convert", LITE, str(lite[0]), "-o", str(locked / "o.msgpack")]) == 2
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err
    assert list(locked.iterdir()) == []


def test_pretrained_ports_is_a_leaf_package():
    """``import pretrained_ports`` loads neither jaxcam nor OpenCV nor JAX: the reader, the
    converters and the store stand alone (the zoo's by-name loading is in jaxcam.models)."""
    import subprocess
    import sys

    code = ("import sys, pretrained_ports; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jaxcam', 'cv2', 'jax'));"
            " print(bad); sys.exit(bool(bad))")
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
