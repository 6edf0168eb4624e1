"""Hand-assembled checkpoint files for the reader's security and fuzz tests.

Pickles are written opcode by opcode (``pickle`` module constants) so that tests can
place any opcode anywhere; the files are wrapped in torch's zip or legacy layout. The
tests here check that the assembler writes real checkpoints: torch itself reads them
to the same values as ``read_checkpoint``, so hostile variants differ from a trusted
file only by what each test changes.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pretrained_ports import read_checkpoint

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
FORMATS = ("zip", "legacy")

# ------------------------------------------------------------------ opcodes


def p_str(text: str) -> bytes:
    raw = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def p_int(value: int) -> bytes:
    if isinstance(value, bool):
        return pickle.NEWTRUE if value else pickle.NEWFALSE
    if 0 <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    raw = pickle.encode_long(value)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def p_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def p_tuple(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def p_call(func: bytes, *args: bytes) -> bytes:
    return func + p_tuple(*args) + pickle.REDUCE


def p_dict(pairs: dict[str, bytes]) -> bytes:
    if not pairs:
        return pickle.EMPTY_DICT
    body = b"".join(p_str(k) + v for k, v in pairs.items())
    return pickle.EMPTY_DICT + pickle.MARK + body + pickle.SETITEMS


def p_pid(kind: str, key: str, numel: int, fmt: str) -> bytes:
    """A storage persistent id, as ``torch.save`` writes it in format ``fmt``."""
    fields = [p_str("storage"), p_global("torch", kind), p_str(key), p_str("cpu"), p_int(numel)]
    if fmt == "legacy":
        fields.append(pickle.NONE)  # no view
    return p_tuple(*fields) + pickle.BINPERSID


def p_tensor(
    fmt: str,
    *,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    numel: int,
    key: str = "0",
    kind: str = "FloatStorage",
    offset: int = 0,
) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {})``."""
    return p_call(
        p_global("torch._utils", "_rebuild_tensor_v2"),
        p_pid(kind, key, numel, fmt),
        p_int(offset),
        p_tuple(*map(p_int, size)),
        p_tuple(*map(p_int, stride)),
        pickle.NEWFALSE,
        p_call(p_global("collections", "OrderedDict")),
    )


def dump(body: bytes) -> bytes:
    """One protocol-2 pickle whose single value ``body`` pushes."""
    return pickle.PROTO + b"\x02" + body + pickle.STOP


# -------------------------------------------------------------------- files


def legacy_file(main: bytes, storages: dict[str, tuple[int, bytes]]) -> bytes:
    """Legacy layout: magic, protocol, sys info, ``main``, keys, then ``{key: (numel, raw)}``."""
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    head = b"".join(pickle.dumps(x, 2) for x in (LEGACY_MAGIC, 1001, sys_info))
    body = b"".join(struct.pack("<q", n) + raw for n, raw in storages.values())
    return head + main + pickle.dumps(list(storages), 2) + body


def zip_file(
    main: bytes,
    storages: dict[str, tuple[int, bytes]],
    *,
    compression: int = zipfile.ZIP_STORED,
) -> bytes:
    """Zip layout: ``archive/data.pkl`` = ``main`` plus one ``archive/data/<key>`` each."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr("archive/data.pkl", main)
        archive.writestr("archive/byteorder", "little")
        for key, (_, raw) in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def checkpoint(fmt: str, main: bytes, storages: dict[str, tuple[int, bytes]]) -> bytes:
    return (zip_file if fmt == "zip" else legacy_file)(main, storages)


def trusted(fmt: str) -> tuple[bytes, dict[str, np.ndarray]]:
    """A small hand-assembled state_dict file and the arrays it holds.

    ``w`` is a 2x3 float32 matrix; ``w.T`` its transpose (shared storage, strides
    (1, 3)); ``n`` an int64 vector.
    """
    w = np.arange(6, dtype=np.float32).reshape(2, 3) * np.float32(1.5) - np.float32(2.25)
    n = np.array([7, -3, 2**40], dtype=np.int64)
    main = dump(p_dict({
        "w": p_tensor(fmt, size=(2, 3), stride=(3, 1), numel=6),
        "w.T": p_tensor(fmt, size=(3, 2), stride=(1, 3), numel=6),
        "n": p_tensor(fmt, size=(3,), stride=(1,), numel=3, key="1", kind="LongStorage"),
    }))
    storages = {"0": (6, w.astype("<f4").tobytes()), "1": (3, n.astype("<i8").tobytes())}
    return checkpoint(fmt, main, storages), {"w": w, "w.T": w.T, "n": n}


def assert_reads_exactly(got: dict[str, np.ndarray], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name, strict=True)


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("fmt", FORMATS)
def test_assembled_file_is_a_real_checkpoint(tmp_path: Path, fmt: str) -> None:
    torch = pytest.importorskip("torch")
    data, want = trusted(fmt)
    path = tmp_path / "trusted.pt"
    path.write_bytes(data)
    by_torch = torch.load(path, weights_only=True)
    assert_reads_exactly({k: v.numpy() for k, v in by_torch.items()}, want)
    assert_reads_exactly(read_checkpoint(path), want)
