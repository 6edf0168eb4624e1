"""Fuzzing ``read_checkpoint``: only CheckpointError escapes, and memory stays bounded.

Inputs are real torch.save files (both formats) with byte flips, truncations and
insertions, and generated opcode streams wrapped in either layout. Each read runs
under tracemalloc; its peak must stay within the default budget for small files
(64 MiB) plus slack. Runs are derandomized (a fixed seed, no example database), so
CI sees the same examples every time.
"""

from __future__ import annotations

import io
import pickletools
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reader_files import (
    FORMATS,
    assert_reads_exactly,
    checkpoint,
    p_dict,
    p_global,
    p_int,
    p_pid,
    p_str,
    p_tensor,
    p_tuple,
)

from pretrained_ports import CheckpointError, read_checkpoint

torch = pytest.importorskip("torch")

MIB = 1 << 20
PEAK_LIMIT = 80 * MIB  # the 64 MiB budget of a small file, plus the interpreter's own
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


class _Seeds(dict):  # type: ignore[type-arg]
    """fmt -> (bytes of a small torch.save file, the arrays torch.load reads from it)."""

    def __repr__(self) -> str:  # hypothesis prints fixtures with a failing example
        return f"<seed checkpoints {sorted(self)}>"


@pytest.fixture(scope="module")
def seeds(work: Path) -> _Seeds:
    """fmt -> (bytes of a small torch.save file, the arrays torch.load reads from it)."""
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(4, 3, generator=gen)
    sd = {
        "w": base,
        "view": base[1:3, ::2],
        "t": torch.randn(3, 2, generator=gen, dtype=torch.float64).t(),
        "h": torch.randn(3, generator=gen).half(),
        "n": torch.tensor([3, -1], dtype=torch.int64),
        "e": torch.arange(2.0).expand(3, 2),
    }
    out = _Seeds()
    for fmt in FORMATS:
        path = work / f"seed-{fmt}.pt"
        torch.save(sd, path, _use_new_zipfile_serialization=fmt == "zip")
        want = {k: (v.float() if v.dtype == torch.half else v).contiguous().numpy()
                for k, v in torch.load(path, weights_only=True).items()}
        out[fmt] = (path.read_bytes(), want)
    return out


def _read_bounded(path: Path) -> None:
    """Read ``path``: it may succeed or raise CheckpointError, within PEAK_LIMIT bytes."""
    tracemalloc.start()
    try:
        read_checkpoint(path)
    except CheckpointError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1 and str(path) in message, message
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"peak {peak:,} bytes"


def _still_exact(work: Path, seeds: dict[str, Any]) -> None:
    """After a hostile read, trusted files still read exactly: no state survived."""
    for fmt, (_, want) in seeds.items():
        assert_reads_exactly(read_checkpoint(work / f"seed-{fmt}.pt"), want)


# ------------------------------------------------------------------ mutations

_EDGE_BYTES = st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"("])
_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
        st.integers(0, 1 << 16),
        st.one_of(_EDGE_BYTES, st.binary(min_size=1, max_size=8)),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for edit, where, blob in edits:
        at = where % (len(out) + 1)
        if edit == "flip" and at < len(out):
            out[at] ^= 1 << (blob[0] % 8)
        elif edit == "set":
            out[at : at + len(blob)] = blob
        elif edit == "cut":
            del out[at:]
        elif edit == "insert":
            out[at:at] = blob
        else:
            del out[at : at + blob[0] % 16 + 1]
    return bytes(out)


def _rewrite_member(data: bytes, member: str, edits: list[tuple[str, int, bytes]]) -> bytes:
    """The zip ``data`` with one record mutated (and its CRC made to match)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if info.filename.endswith(member):
                body = _mutate(body, edits)
            zout.writestr(info, body)
    return out.getvalue()


@FUZZ
@given(edits=_EDITS)
def test_fuzz_mutated_legacy_file(work: Path, seeds: dict[str, Any], edits: Any) -> None:
    path = work / "mutated-legacy.pt"
    path.write_bytes(_mutate(seeds["legacy"][0], edits))
    _read_bounded(path)
    _still_exact(work, seeds)


@FUZZ
@given(edits=_EDITS, member=st.sampled_from(["/data.pkl", "/data/0", "/byteorder", ""]))
def test_fuzz_mutated_zip_file(work: Path, seeds: dict[str, Any], edits: Any, member: str) -> None:
    data = seeds["zip"][0]
    # "" mutates the archive's own bytes (headers, CRCs); otherwise one record's content.
    mutated = _rewrite_member(data, member, edits) if member else _mutate(data, edits)
    path = work / "mutated-zip.pt"
    path.write_bytes(mutated)
    _read_bounded(path)
    _still_exact(work, seeds)


# ------------------------------------------------------------- opcode streams

_NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 255, 256, 2**16 - 1, 2**26, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
_NO_ARG = st.sampled_from(
    [op.code.encode("latin-1") for op in pickletools.opcodes if op.arg is None]
)


@st.composite
def _with_argument(draw: st.DrawFn) -> bytes:
    code, width = draw(st.sampled_from(
        [(b"K", 1), (b"h", 1), (b"q", 1), (b"\x80", 1), (b"M", 2), (b"J", 4), (b"j", 4),
         (b"r", 4), (b"G", 8), (b"\x95", 8), (b"\x82", 1), (b"\x84", 4)]
    ))
    return code + (draw(_NUMBERS) % (1 << (8 * width))).to_bytes(width, "little")


@st.composite
def _counted(draw: st.DrawFn) -> bytes:
    code, width = draw(st.sampled_from(
        [(b"X", 4), (b"B", 4), (b"T", 4), (b"\x8b", 4), (b"\x8c", 1), (b"U", 1), (b"C", 1),
         (b"\x8a", 1), (b"\x8d", 8), (b"\x8e", 8), (b"\x96", 8)]
    ))
    payload = draw(st.binary(max_size=12))
    declared = draw(st.one_of(st.just(len(payload)), _NUMBERS)) % (1 << (8 * width))
    return code + declared.to_bytes(width, "little") + payload


_LINES = st.one_of(
    st.builds(lambda c, n: c + str(n).encode() + b"\n", st.sampled_from([b"I", b"L", b"g", b"p"]),
              _NUMBERS),
    st.builds(lambda c, t: c + t + b"\n", st.sampled_from([b"S", b"V", b"F", b"P"]),
              st.sampled_from([b"'a'", b"1.5", b"x", b"", b"'storage'", b"\\u0041"])),
)
_GLOBALS = st.builds(
    lambda m, n, inst: (b"i" if inst else b"c") + f"{m}\n{n}\n".encode(),
    st.sampled_from(["torch._utils", "torch", "collections", "os", "builtins"]),
    st.sampled_from(["_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                     "FloatStorage", "uint16", "Size", "OrderedDict", "system", "eval"]),
    st.booleans(),
)


@st.composite
def _snippet(draw: st.DrawFn) -> bytes:
    """Well-formed pieces of a state_dict pickle, so streams reach the stand-ins."""
    fmt = draw(st.sampled_from(FORMATS))
    size = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 2**20]), max_size=3)))
    stride = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 2**40]), min_size=len(size),
                                 max_size=len(size))))
    return draw(st.sampled_from([
        p_tensor(fmt, size=size, stride=stride, numel=draw(st.sampled_from([0, 4, 2**30]))),
        p_pid("FloatStorage", "0", 4, fmt),
        p_dict({"w": p_tensor(fmt, size=(4,), stride=(1,), numel=4)}),
        p_tuple(p_int(1), p_str("a")),
        p_global("torch._utils", "_rebuild_tensor_v2"),
    ]))


_STREAMS = st.lists(
    st.one_of(_NO_ARG, _with_argument(), _counted(), _LINES, _GLOBALS, _snippet()),
    max_size=30,
).map(lambda tokens: b"\x80\x02" + b"".join(tokens) + b".")


@FUZZ
@given(stream=_STREAMS, fmt=st.sampled_from(FORMATS))
def test_fuzz_opcode_streams(work: Path, seeds: dict[str, Any], stream: bytes, fmt: str) -> None:
    path = work / "stream.pt"
    path.write_bytes(checkpoint(fmt, stream, {"0": (4, struct.pack("<4f", 1, 2, 3, 4))}))
    _read_bounded(path)
    _still_exact(work, seeds)




# ------------------------------------------------------------- integer fields

_INTS = st.one_of(
    st.integers(0, 8),
    st.integers(2**62, 2**64),
    st.integers(-(2**70), -1),
    st.integers(2**64, 2**512),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63]),
)


def _text_int(digits: int) -> bytes:
    return b"I" + b"9" * digits + b"\n"


@FUZZ
@given(size=st.lists(_INTS, min_size=0, max_size=6), stride=st.lists(_INTS, max_size=6),
       offset=_INTS, numel=_INTS, digits=st.integers(1, 6000),
       fmt=st.sampled_from(FORMATS), where=st.sampled_from(["none", "numel", "offset"]))
def test_fuzz_integer_fields(work: Path, seeds: dict[str, Any], size: list[int],
                             stride: list[int], offset: int, numel: int, digits: int,
                             fmt: str, where: str) -> None:
    """Sizes, strides, offsets and element counts of any magnitude (binary LONG1 or a
    text INT of thousands of digits): a result or a one-line CheckpointError naming the
    file, under 1 s and the memory limit, never Python's int-conversion limit."""
    body = p_tensor(fmt, size=tuple(size), stride=tuple(stride), numel=numel, offset=offset)
    if where != "none":                      # one field as a text INT of `digits` digits
        field = p_int(numel if where == "numel" else offset)
        body = body.replace(field, _text_int(digits), 1)
    path = work / "ints.pt"
    path.write_bytes(checkpoint(fmt, p_dict({"w": body}).join([b"\x80\x02", b"."]),
                                {"0": (4, struct.pack("<4f", 1, 2, 3, 4))}))
    start = time.process_time()
    _read_bounded(path)
    assert time.process_time() - start < 2.0      # traced: allocations run slower
    _still_exact(work, seeds)
