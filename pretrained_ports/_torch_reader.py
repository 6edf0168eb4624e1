"""Read PyTorch checkpoints (tensor state_dicts) into NumPy arrays without importing torch.

Two on-disk layouts are understood:

Zip format (``torch.save`` default since torch 1.6):
    A zip archive with ``<prefix>/data.pkl`` (the pickled object), one record
    ``<prefix>/data/<key>`` per storage holding its raw bytes, and optionally
    ``<prefix>/byteorder`` (``little`` or ``big``; little when absent). Storages are
    referenced from the pickle through persistent ids
    ``('storage', storage_type, key, location, numel)``.

Legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``):
    Several pickles back to back in one file: the magic number
    ``0x1950a86a20f9469cfc6c``, the protocol version ``1001``, a sys-info dict (with
    ``little_endian``), the pickled object whose persistent ids are
    ``('storage', storage_type, root_key, location, numel, view_metadata)``, then a
    pickled list of storage keys. After that, for each key in that order, an 8-byte
    little-endian element count followed by the storage's raw bytes.
    ``view_metadata`` is ``None`` or ``(view_key, offset, view_size)`` (in elements) and
    selects a window of the root storage.

In both layouts a tensor is pickled as a call to a ``torch._utils._rebuild_*`` function
with ``(storage, storage_offset, size, stride, ...)``; offsets and strides count
elements.

Every byte is treated as hostile (REFERENCES.md section 6):

* Globals go through an allow-list; each resolves to a stand-in made fresh for this
  read, slotted and read-only, so no pickle opcode (REDUCE, BUILD, SETITEM, setattr...)
  can alter an object another read will see. torch is never imported.
* Each pickle is scanned (:func:`_scan_pickle`) before the C unpickler sees it: memo
  indices, argument lengths, nesting depth and the memory its objects can take are
  bounded by the stream itself.
* Every allocation is charged to a byte budget (:class:`_Budget`) before it happens:
  the file's records, the pickle's objects and the arrays returned.
* Tensor records are checked against their storage's declared element count, and that
  count against the storage's real bytes.

float16 and bfloat16 tensors are returned as float32 (exactly; every half/bfloat16 value
is representable in float32). Every other dtype is kept, integers stay integers, and all
arrays are C-contiguous, writeable and in native byte order.
"""

from __future__ import annotations

import _compat_pickle
import collections
import functools
import io
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from pretrained_ports._errors import (
    CheckpointError,
    CheckpointTooLargeError,
    UnsafeCheckpointError,
)

__all__ = ["read_checkpoint"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"

_MIB = 1 << 20
_BUDGET_FLOOR = 64 * _MIB
_BUDGET_FILE_MULTIPLE = 4
# Deeper nesting is never written by torch.save; the bound keeps CPython's unguarded
# recursions (hashing nested tuples) far from the C stack limit.
_MAX_DEPTH = 100
# Integers from the file are bounded before any arithmetic or formatting touches them:
# LONG1 / LONG4 payloads of at most 64 bytes and INT / LONG lines of at most 160 digits
# (the legacy format's magic number takes 10 bytes), then every size, stride, offset and
# element count below 2**63.
_MAX_INT_BYTES = 64
_MAX_INT_LINE = 160
_MAX_INT = 2**63
_MAX_NDIM = 32
# An empty tensor owns no bytes, but numpy still refuses shapes whose nonzero
# dimensions multiply past its index range.
_MAX_EMPTY_EXTENT = 1 << 48
# Upper bound on what one opcode can make the C unpickler allocate (a new dict, set
# entry, tuple, stack and memo slots), so a pickle's objects can be charged to the
# budget before it is unpickled. Argument payloads are charged at 4 bytes per byte
# (the widest str representation).
_BYTES_PER_OPCODE = 128
_BYTES_PER_PAYLOAD_BYTE = 4
# zipfile's memory per central-directory record (a ZipInfo, its name, the name index;
# measured ~550 bytes) and the smallest such record.
_ZIP_ENTRY_BYTES = 640
_ZIP_RECORD_MIN_BYTES = 46


# --------------------------------------------------------------------------- budget


class _Budget:
    """The bytes one read may still allocate; charged before every allocation.

    Charged: records read (or inflated) from the file, the objects each pickle can
    build (estimated by :func:`_scan_pickle`), and the arrays returned.
    """

    __slots__ = ("limit", "used", "source")

    def __init__(self, limit: int, source: str) -> None:
        self.limit, self.used, self.source = limit, 0, source

    def take(self, nbytes: int, what: str) -> None:
        """Charge ``nbytes`` for ``what``, or raise before anything is allocated."""
        if nbytes > self.limit - self.used:
            raise CheckpointTooLargeError(
                f"checkpoint {self.source}: {what} needs {nbytes:,} bytes, over the "
                f"reading budget of {self.limit:,} bytes ({self.used:,} already used); "
                "if the file is trusted, pass a larger read_checkpoint(..., max_bytes=N)"
            )
        self.used += nbytes


def _default_max_bytes(file_size: int) -> int:
    """The default budget: ``max(4 * file_size, 64 MiB)``.

    Four times the file covers holding the file's records, the float32 copies of
    half-precision tensors and the pickle's objects; the floor keeps small files readable.
    """
    return max(_BUDGET_FILE_MULTIPLE * file_size, _BUDGET_FLOOR)


# ------------------------------------------------------------------ pickle pre-scan

# Opcode classes of the scan (``_KINDS[opcode]``); atoms push one value, POPn pop n
# values and push one, INTOn pop n values into the container below them.
(_ATOM, _PUT1, _PUT4, _GET1, _GET4, _LEN1, _LEN4, _LEN4S, _LEN8, _MARK, _FROM_MARK,
 _INTO_FROM_MARK, _POP1, _POP2, _POP3, _INTO1, _INTO2, _LINE, _GLOBAL, _INST, _POP,
 _POP_MARK, _DUP, _MEMOIZE, _PUT_LINE, _GET_LINE, _PROTO, _FRAME, _STOP, _REFUSED) = range(30)


def _opcode_tables() -> tuple[bytes, bytes]:
    """Build the scan's 256-entry class and argument-width tables.

    Refused (class ``_REFUSED``): sets (no state_dict holds one, and each costs 216
    bytes for one opcode byte), the extension registry (EXT*), out-of-band buffers and
    every byte that is not an opcode.
    """
    kinds = bytearray([_REFUSED]) * 256
    widths = bytearray(256)

    def add(codes: str, kind: int, width: int = 0) -> None:
        for code in codes:
            kinds[ord(code)], widths[ord(code)] = kind, width

    add("N\x88\x89)]}", _ATOM)  # NONE NEWTRUE NEWFALSE EMPTY_TUPLE EMPTY_LIST EMPTY_DICT
    add("K", _ATOM, 1)  # BININT1
    add("M", _ATOM, 2)  # BININT2
    add("J", _ATOM, 4)  # BININT
    add("G", _ATOM, 8)  # BINFLOAT
    add("q", _PUT1)  # BINPUT
    add("r", _PUT4)  # LONG_BINPUT
    add("h", _GET1)  # BINGET
    add("j", _GET4)  # LONG_BINGET
    add("U\x8c\x8aC", _LEN1)  # SHORT_BINSTRING SHORT_BINUNICODE LONG1 SHORT_BINBYTES
    add("XB", _LEN4)  # BINUNICODE BINBYTES
    add("T\x8b", _LEN4S)  # BINSTRING LONG4 (signed lengths)
    add("\x8d\x8e\x96", _LEN8)  # BINUNICODE8 BINBYTES8 BYTEARRAY8
    add("(", _MARK)
    add("tldo", _FROM_MARK)  # TUPLE LIST DICT OBJ
    add("eu", _INTO_FROM_MARK)  # APPENDS SETITEMS
    add("\x85Q", _POP1)  # TUPLE1 BINPERSID
    add("\x86R\x81\x93", _POP2)  # TUPLE2 REDUCE NEWOBJ STACK_GLOBAL
    add("\x87\x92", _POP3)  # TUPLE3 NEWOBJ_EX
    add("ab", _INTO1)  # APPEND BUILD
    add("s", _INTO2)  # SETITEM
    add("ILFSVP", _LINE)  # INT LONG FLOAT STRING UNICODE PERSID
    add("c", _GLOBAL)
    add("i", _INST)
    add("0", _POP)
    add("1", _POP_MARK)
    add("2", _DUP)
    add("\x94", _MEMOIZE)
    add("p", _PUT_LINE)
    add("g", _GET_LINE)
    add("\x80", _PROTO)
    add("\x95", _FRAME)
    add(".", _STOP)
    return bytes(kinds), bytes(widths)


_KINDS, _WIDTHS = _opcode_tables()
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U64 = struct.Struct("<Q").unpack_from


class _ScanError(Exception):
    """A pickle stream failed the pre-scan; the message says where and why."""


def _memo_index(line: bytes, pos: int) -> int:
    text = line.strip()
    if not text.isdigit() or len(text) > 10:
        raise _ScanError(f"bad memo index {text[:20]!r} at byte {pos}")
    return int(text)


def _scan_pickle(data: bytes, start: int) -> tuple[int, int]:
    """Check one pickle stream ``data[start:]`` up to its STOP before unpickling it.

    Replays the unpickler's stack, marks and memo on nesting depths only, so that
    nothing the C unpickler then does can allocate beyond what the stream's own bytes
    pay for:

    * memo indices (PUT, BINPUT, LONG_BINPUT) are at most the number of memo writes
      before them (the C unpickler grows its memo array to the largest index), and
      reads name a written index;
    * every length (FRAME, BINBYTES8, BINUNICODE8, LONG4...) fits in the bytes left;
    * values and MARKs nest at most ``_MAX_DEPTH`` deep (hashing a deeply nested
      tuple overflows the C stack: a 300 kB pickle crashes ``pickle.loads``);
    * STOP leaves exactly one value.

    Only streams the C unpickler would run need an exact replay: popping through a
    MARK is not checked here because the C unpickler refuses it at that same opcode,
    before anything else happens. Mutations (APPEND, SETITEM, BUILD) raise the depth
    of the container on the stack but not of its memo copies; that leaves only lists,
    dicts and objects under-counted, and hashing (the one unguarded recursion) stops
    at them, while tuples, immutable, are counted exactly.

    The loop runs once per opcode, so it is written for speed: common classes first,
    and a read past the end or an empty pop (``IndexError``) reported once, outside.

    Returns:
        ``(end, cost)``: the offset just past STOP and an upper bound on the bytes the
        unpickled objects can take.

    Raises:
        _ScanError: The stream is malformed or hostile.
    """
    kinds, widths, u32 = _KINDS, _WIDTHS, _U32
    end = len(data)
    stack: list[int] = []
    push, pop = stack.append, stack.pop
    marks: list[int] = []  # enclosing fences
    memo: dict[int, int] = {}
    fence = 0  # stack length at the innermost MARK
    puts = ops = payload = 0
    pos = start
    try:
        while True:
            op = data[pos]
            kind = kinds[op]
            ops += 1
            if kind == _ATOM:
                push(1)
                pos += 1 + widths[op]
            elif kind == _PUT4 or kind == _PUT1:
                index = u32(data, pos + 1)[0] if kind == _PUT4 else data[pos + 1]
                if index > puts:
                    raise _ScanError(
                        f"memo index {index} at byte {pos} exceeds the {puts} memo writes "
                        "before it"
                    )
                memo[index] = stack[-1]
                puts += 1
                pos += 5 if kind == _PUT4 else 2
            elif kind == _GET1:
                push(memo[data[pos + 1]])
                pos += 2
            elif kind == _LEN4:
                length = u32(data, pos + 1)[0]
                pos += 5 + length
                if pos > end:
                    raise _ScanError(f"argument length {length} runs past the end of the stream")
                payload += length
                push(1)
            elif kind == _MARK:
                if len(marks) >= _MAX_DEPTH:
                    raise _ScanError(f"MARKs nested deeper than {_MAX_DEPTH} at byte {pos}")
                marks.append(fence)
                fence = len(stack)
                pos += 1
            elif kind == _FROM_MARK:
                depth = 1 + max(stack[fence:], default=0)
                del stack[fence:]
                fence = marks.pop()
                push(depth)
                pos += 1
                if depth > _MAX_DEPTH:
                    raise _ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _POP2:
                depth = max(pop(), pop()) + 1
                push(depth)
                pos += 1
                if depth > _MAX_DEPTH:
                    raise _ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _POP1:
                depth = stack[-1] = stack[-1] + 1
                pos += 1
                if depth > _MAX_DEPTH:
                    raise _ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _INTO1 or kind == _INTO2:
                depth = (pop() if kind == _INTO1 else max(pop(), pop())) + 1
                if depth > stack[-1]:  # the container below now nests the value
                    stack[-1] = depth
                pos += 1
                if depth > _MAX_DEPTH:
                    raise _ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _GET4:
                push(memo[u32(data, pos + 1)[0]])
                pos += 5
            elif kind == _LEN1 or kind == _LEN4S or kind == _LEN8:
                if kind == _LEN1:
                    length, pos = data[pos + 1], pos + 2
                elif kind == _LEN4S:
                    length, pos = _I32(data, pos + 1)[0], pos + 5
                else:
                    length, pos = _U64(data, pos + 1)[0], pos + 9
                if length < 0 or length > end - pos:
                    raise _ScanError(f"argument length {length} runs past the end of the stream")
                if length > _MAX_INT_BYTES and (op == 0x8A or op == 0x8B):  # LONG1, LONG4
                    raise _ScanError(
                        f"an integer of {length} bytes at byte {pos - 5 if op == 0x8B else pos - 2}"
                        f" (at most {_MAX_INT_BYTES}): a checkpoint's sizes, strides and "
                        "offsets lie below 2**63"
                    )
                pos += length
                payload += length
                push(1)
            elif kind == _INTO_FROM_MARK:
                depth = 1 + max(stack[fence:], default=0)
                del stack[fence:]
                fence = marks.pop()
                if depth > stack[-1]:
                    stack[-1] = depth
                pos += 1
                if depth > _MAX_DEPTH:
                    raise _ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _POP3:
                depth = max(pop(), pop(), pop()) + 1
                push(depth)
                pos += 1
                if depth > _MAX_DEPTH:
                    raise _ScanError(f"values nested deeper than {_MAX_DEPTH} at byte {pos - 1}")
            elif kind == _LINE or kind == _GLOBAL or kind == _INST:
                line_end = data.index(b"\n", pos + 1)
                if (op == 0x49 or op == 0x4C) and line_end - pos > _MAX_INT_LINE:  # INT, LONG
                    raise _ScanError(
                        f"an integer of {line_end - pos - 1} characters at byte {pos} (at most "
                        f"{_MAX_INT_LINE}): a checkpoint's sizes, strides and offsets lie "
                        "below 2**63"
                    )
                if kind != _LINE:
                    line_end = data.index(b"\n", line_end + 1)
                payload += line_end - pos
                pos = line_end + 1
                if kind == _INST:  # instantiates from the values above its MARK
                    del stack[fence:]
                    fence = marks.pop()
                push(1)
            elif kind == _POP:
                if len(stack) > fence:
                    pop()
                else:  # POP on an empty MARK pops the MARK, as the C unpickler does
                    fence = marks.pop()
                pos += 1
            elif kind == _POP_MARK:
                del stack[fence:]
                fence = marks.pop()
                pos += 1
            elif kind == _DUP:
                push(stack[-1])
                pos += 1
            elif kind == _MEMOIZE:
                memo[len(memo)] = stack[-1]
                puts += 1
                pos += 1
            elif kind == _PUT_LINE or kind == _GET_LINE:
                line_end = data.index(b"\n", pos + 1)
                index = _memo_index(data[pos + 1 : line_end], pos)
                if kind == _GET_LINE:
                    push(memo[index])
                elif index > puts:
                    raise _ScanError(
                        f"memo index {index} at byte {pos} exceeds the {puts} memo writes "
                        "before it"
                    )
                else:
                    memo[index] = stack[-1]
                    puts += 1
                pos = line_end + 1
            elif kind == _PROTO:
                if data[pos + 1] > pickle.HIGHEST_PROTOCOL:
                    raise _ScanError(f"unsupported pickle protocol {data[pos + 1]}")
                pos += 2
            elif kind == _FRAME:
                length = _U64(data, pos + 1)[0]
                pos += 9
                if length > end - pos:
                    raise _ScanError(f"frame length {length} runs past the end of the stream")
            elif kind == _STOP:
                if len(stack) != 1 or marks:
                    raise _ScanError(f"STOP at byte {pos} leaves {len(stack)} values, not one")
                return pos + 1, ops * _BYTES_PER_OPCODE + payload * _BYTES_PER_PAYLOAD_BYTE
            else:
                raise _ScanError(f"opcode {data[pos:pos + 1]!r} at byte {pos} is not allowed")
    except (IndexError, KeyError, ValueError, struct.error):
        # Reading past the end, popping an empty stack or MARK list, a memo read of an
        # unwritten index, a line argument without its newline.
        raise _ScanError(
            f"truncated or inconsistent stream at byte {pos}: stack underflow, missing "
            "STOP, missing newline or unwritten memo index"
        ) from None


# -------------------------------------------------------------------- stand-ins


class _Mutation(Exception):
    """A pickle tried to alter a reader object; turned into an UnsafeCheckpointError."""


class _BadRecord(Exception):
    """A stand-in refused its arguments; turned into a CheckpointError naming the file."""


class _Frozen:
    """Base of every object a pickle can reach: slotted (no ``__dict__``) and read-only.

    BUILD calls ``__setstate__`` (or writes ``__dict__``/attributes), SETITEM calls
    ``__setitem__``: all of them raise, so a file cannot change how the reader (or a
    later read) decodes anything.
    """

    __slots__ = ()

    def __init__(self, *values: Any) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def _refuse(self, *_args: Any) -> None:
        raise _Mutation(f"{type(self).__name__.lstrip('_')} {getattr(self, 'name', '')}".strip())

    __setattr__ = __delattr__ = __setstate__ = __setitem__ = __delitem__ = _refuse

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class _Kind(_Frozen):
    """Stand-in for a torch storage class or dtype: how to decode the raw bytes.

    Attributes:
        name: The torch global this stands in for, e.g. ``"torch.FloatStorage"``.
        code: NumPy type code of one stored element without byte order, e.g. ``"f4"``.
        bfloat16: The elements are bfloat16 bit patterns stored as ``u2``.
        itemsize: Bytes per stored element.
    """

    __slots__ = ("name", "code", "bfloat16", "itemsize")
    name: str
    code: str
    bfloat16: bool
    itemsize: int


_STORAGE_KINDS: tuple[tuple[str, str, bool], ...] = (
    ("torch.FloatStorage", "f4", False),
    ("torch.DoubleStorage", "f8", False),
    ("torch.HalfStorage", "f2", False),
    ("torch.BFloat16Storage", "u2", True),
    ("torch.LongStorage", "i8", False),
    ("torch.IntStorage", "i4", False),
    ("torch.ShortStorage", "i2", False),
    ("torch.CharStorage", "i1", False),
    ("torch.ByteStorage", "u1", False),
    ("torch.BoolStorage", "b1", False),
    ("torch.ComplexFloatStorage", "c8", False),
    ("torch.ComplexDoubleStorage", "c16", False),
    # Dtypes without a legacy storage class are saved as an UntypedStorage (raw
    # bytes) plus the dtype itself, rebuilt by ``_rebuild_tensor_v3``.
    ("torch.uint16", "u2", False),
    ("torch.uint32", "u4", False),
    ("torch.uint64", "u8", False),
    ("torch.storage.UntypedStorage", "u1", False),
)


class _StorageRef(_Frozen):
    """A storage named by a persistent id; its bytes are fetched after unpickling.

    Attributes:
        key: The record name (zip) or root key (legacy).
        kind: How its elements are stored.
        numel: The root storage's declared element count.
        view: Legacy only: ``(view_key, offset, size)`` window of the root, in elements.
    """

    __slots__ = ("key", "kind", "numel", "view")
    key: str
    kind: _Kind
    numel: int
    view: tuple[str, int, int] | None

    @property
    def nbytes(self) -> int:
        """Bytes the tensor may address: the view's window, else the whole storage."""
        return (self.view[2] if self.view is not None else self.numel) * self.kind.itemsize


class _TensorRef(_Frozen):
    """A tensor awaiting materialisation: a strided window into a storage, checked."""

    __slots__ = ("storage", "offset", "size", "stride", "kind")
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    kind: _Kind


class _Global(_Frozen):
    """Stand-in for an allow-listed callable global; calling it runs ``build``."""

    __slots__ = ("name", "build")
    name: str
    build: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.build(*args)


def _exception_text(exc: BaseException) -> str:
    """A foreign exception as one short line (its text may quote the file's bytes)."""
    return f"{type(exc).__name__}: {' '.join(str(exc)[:200].split())}"


def _describe(value: Any) -> str:
    """A short, safe rendering of an untrusted value for an error message.

    Never recursive and never long: nested or huge values (a 10**5-digit int, a deep
    tuple) would otherwise raise while the message is being built.
    """
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"an int of {value.bit_length()} bits"
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, _Frozen):
        return f"{type(value).__name__.lstrip('_')} {getattr(value, 'name', '')}".strip()
    if isinstance(value, tuple) and len(value) <= 8 and all(
        v is None or isinstance(v, (int, str)) for v in value
    ):
        return "(" + ", ".join(map(_describe, value)) + ("," if len(value) == 1 else "") + ")"
    length = f" of length {len(value)}" if isinstance(value, (tuple, list, dict)) else ""
    return f"a {type(value).__name__}{length}"


def _ints(value: Any, what: str) -> tuple[int, ...]:
    """``value`` if it is a tuple of non-negative ints (bools excluded), else raise."""
    if type(value) is not tuple or (
        value and (not set(map(type, value)) <= {int} or min(value) < 0
                   or max(value) >= _MAX_INT)
    ):
        raise _BadRecord(f"malformed tensor record: {what} {_describe(value)}")
    return value


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2``."""
    if not isinstance(storage, _StorageRef):
        raise _BadRecord(f"malformed tensor record: storage is {_describe(storage)}")
    return _tensor(storage, storage_offset, size, stride, storage.kind)


def _rebuild_tensor_v3(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    *_ignored: Any,
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v3`` (raw-byte storage + dtype)."""
    if not isinstance(storage, _StorageRef):
        raise _BadRecord(f"malformed tensor record: storage is {_describe(storage)}")
    if not isinstance(dtype, _Kind):
        raise _BadRecord(f"malformed tensor record: dtype {_describe(dtype)}")
    return _tensor(storage, storage_offset, size, stride, dtype)


def _tensor(storage: _StorageRef, offset: Any, size: Any, stride: Any, kind: _Kind) -> _TensorRef:
    """Validate a tensor record against its storage's declared size, then record it.

    The furthest element the strided window addresses must lie inside the storage, so
    no later step can read (or size an array) beyond the storage's bytes.
    """
    if type(offset) is not int or not 0 <= offset < _MAX_INT:
        raise _BadRecord(f"malformed tensor record: storage offset {_describe(offset)}")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or len(size) > _MAX_NDIM:
        raise _BadRecord(
            f"malformed tensor record: size {_describe(size)} vs stride {_describe(stride)}"
        )
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if (last + 1) * kind.itemsize > storage.nbytes:
            raise _BadRecord(
                f"malformed tensor record: size {_describe(size)}, stride {_describe(stride)} "
                f"and offset {offset} address element {last} of a {storage.nbytes}-byte storage"
            )
    elif math.prod(max(n, 1) for n in size) > _MAX_EMPTY_EXTENT:  # numpy refuses these
        raise _BadRecord(f"malformed tensor record: size {_describe(size)}")
    return _TensorRef(storage, offset, size, stride, kind)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter[_with_state]``: keep the data."""
    return data


def _make_ordered_dict(*args: Any) -> collections.OrderedDict[Any, Any]:
    return collections.OrderedDict(*args)


def _make_size(*args: Any) -> tuple[Any, ...]:
    return tuple(*args)


_CALLABLES: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("collections", "OrderedDict", _make_ordered_dict),
    ("torch._utils", "_rebuild_tensor", _rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3),
    ("torch._utils", "_rebuild_parameter", _rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter),
    ("torch", "Size", _make_size),
)


def _stand_ins() -> dict[tuple[str, str], _Frozen]:
    """Fresh stand-ins for the allow-listed globals, made for one read only."""
    allowed: dict[tuple[str, str], _Frozen] = {
        (module, name): _Global(f"{module}.{name}", build) for module, name, build in _CALLABLES
    }
    for full_name, code, bfloat16 in _STORAGE_KINDS:
        module, _, name = full_name.rpartition(".")
        allowed[(module, name)] = _Kind(full_name, code, bfloat16, np.dtype(code).itemsize)
    return allowed


# -------------------------------------------------------------------- unpickling


class _Storages:
    """The storages one read's pickles reference: key -> (kind, declared numel)."""

    __slots__ = ("declared", "source")

    def __init__(self, source: str) -> None:
        self.declared: dict[str, tuple[_Kind, int]] = {}
        self.source = source

    def declare(self, key: str, kind: _Kind, numel: int) -> None:
        known = self.declared.setdefault(key, (kind, numel))
        if known[0] is not kind or known[1] != numel:
            raise CheckpointError(
                f"checkpoint {self.source} declares storage {key!r} twice, differently"
            )


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and storage persistent ids."""

    def __init__(
        self,
        file: io.BytesIO,
        source: str,
        legacy: bool,
        allowed: dict[tuple[str, str], _Frozen],
        storages: _Storages,
    ) -> None:
        super().__init__(file)
        self._source = source
        self._legacy = legacy
        self._allowed = allowed
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        written = f"{module}.{name}"
        # Protocol 0-2 pickles may spell globals the Python 2 way (``__builtin__.eval``);
        # translate like pickle itself would so the allow-list and message see the real one.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        spelled = "" if written == f"{module}.{name}" else f" (written as {written[:80]!r})"
        raise UnsafeCheckpointError(
            f"refusing to load global {f'{module}.{name}'[:80]!r}{spelled} from checkpoint "
            f"{self._source}: only tensor state_dicts are allowed"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafeCheckpointError(
                f"refusing persistent id {_describe(kind)} in checkpoint {self._source}: "
                "only tensor storages are allowed"
            )
        if (
            len(pid) != (6 if self._legacy else 5)
            or not isinstance(pid[1], _Kind)
            or not isinstance(pid[2], str)
            or type(pid[4]) is not int
            or not 0 <= pid[4] < _MAX_INT // 16  # at most 16-byte elements: bytes < 2**63
        ):
            raise CheckpointError(f"malformed storage record {_describe(pid)} in {self._source}")
        kind, key, numel = pid[1], pid[2], pid[4]
        view = pid[5] if self._legacy else None
        if view is not None:
            if not (
                isinstance(view, tuple)
                and len(view) == 3
                and isinstance(view[0], str)
                and all(type(v) is int and 0 <= v < _MAX_INT for v in view[1:])
                and view[1] + view[2] <= numel
            ):
                raise CheckpointError(
                    f"malformed storage view {_describe(view)} in {self._source}"
                )
        self._storages.declare(key, kind, numel)
        return _StorageRef(key, kind, numel, view)


class _Reader:
    """One read's state: its source, budget, stand-ins and declared storages."""

    __slots__ = ("source", "budget", "allowed", "storages")

    def __init__(self, source: str, max_bytes: int) -> None:
        self.source = source
        self.budget = _Budget(max_bytes, source)
        self.allowed = _stand_ins()
        self.storages = _Storages(source)

    def unpickle(self, data: bytes, start: int, legacy: bool) -> tuple[Any, int]:
        """Scan, charge and unpickle the pickle at ``data[start:]``; return it and its end."""
        try:
            end, cost = _scan_pickle(data, start)
        except _ScanError as exc:
            raise CheckpointError(f"malformed pickle in checkpoint {self.source}: {exc}") from None
        self.budget.take(cost, "the pickle's objects")
        chunk = data if start == 0 and end == len(data) else data[start:end]
        unpickler = _RestrictedUnpickler(
            io.BytesIO(chunk), self.source, legacy, self.allowed, self.storages
        )
        try:
            return unpickler.load(), end
        except CheckpointError:
            raise
        except _BadRecord as exc:
            raise CheckpointError(f"checkpoint {self.source}: {exc}") from None
        except _Mutation as exc:
            raise UnsafeCheckpointError(
                f"refusing checkpoint {self.source}: its pickle tries to modify {exc}"
            ) from None
        except Exception as exc:  # any other failure means the pickle stream is malformed
            raise CheckpointError(
                f"malformed pickle in checkpoint {self.source}: {_exception_text(exc)}"
            ) from None


# ------------------------------------------------------------------ materialising


@functools.cache
def _dtypes(byteorder: str, code: str, bfloat16: bool) -> tuple[np.dtype[Any], np.dtype[Any]]:
    """(stored dtype, returned dtype): bfloat16 widens via uint32 bits, float16 to float32."""
    stored = np.dtype(byteorder + code)
    if bfloat16:
        return stored, np.dtype(np.uint32)
    if code == "f2":
        return stored, np.dtype(np.float32)
    return stored, stored.newbyteorder("=")


def _materialise(tensor: _TensorRef, raw: memoryview | bytes, byteorder: str) -> np.ndarray:
    """Copy a (checked) strided view of ``raw``, the storage's bytes, into a fresh array."""
    kind = tensor.kind
    dtype, target = _dtypes(byteorder, kind.code, kind.bfloat16)
    if 0 in tensor.size:
        out = np.empty(tensor.size, dtype=target)
    else:
        # A size-1 dimension never steps, so its stride (free in the file) is dropped.
        itemsize = dtype.itemsize
        strides = tuple(s * itemsize if n > 1 else 0 for n, s in zip(tensor.size, tensor.stride))
        view = np.ndarray(
            tensor.size, dtype=dtype, buffer=raw, offset=tensor.offset * dtype.itemsize,
            strides=strides,
        )
        out = view.astype(target, order="C")
    if kind.bfloat16:
        out <<= 16
        return out.view(np.float32)
    return out


def _output_bytes(tensor: _TensorRef) -> int:
    """Bytes of the array ``_materialise`` returns (bfloat16 and float16 widen to 4)."""
    kind = tensor.kind
    itemsize = 4 if kind.bfloat16 or kind.code == "f2" else kind.itemsize
    return math.prod(tensor.size) * itemsize


# ------------------------------------------------------------- choosing tensors

# Wrapper keys that may hold the state_dict, in order of preference.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


def _tensors_in(mapping: Any, source: str) -> dict[str, _TensorRef]:
    if not isinstance(mapping, dict):
        return {}
    tensors = {}
    for key, value in mapping.items():
        if isinstance(value, _TensorRef):
            if not isinstance(key, str):
                raise CheckpointError(
                    f"checkpoint {source} names a tensor {_describe(key)}, not a string"
                )
            tensors[key] = value
    return tensors


def _select_tensors(obj: Any, source: str) -> dict[str, _TensorRef]:
    """Pick the flat ``{name: tensor}`` mapping out of the unpickled object.

    The first of ``state_dict``, ``model``, ``model_state_dict``, ``net`` whose value is
    a dict holding tensors wins; otherwise the top-level tensors. So a training
    checkpoint ``{"state_dict": {...}, "best_acc1": tensor(...)}`` yields the model, not
    its metric.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {source} holds {_describe(obj)}, not a state_dict")
    for key in _WRAPPER_KEYS:
        tensors = _tensors_in(obj.get(key), source)
        if tensors:
            return tensors
    tensors = _tensors_in(obj, source)
    if not tensors:
        raise CheckpointError(f"checkpoint {source} contains no tensors")
    return tensors


def _materialise_all(
    reader: _Reader,
    tensors: dict[str, _TensorRef],
    fetch: Callable[[str], memoryview | bytes],
    byteorder: str,
) -> dict[str, np.ndarray]:
    out = {}
    for name, tensor in tensors.items():
        raw = fetch(tensor.storage.key)
        view = tensor.storage.view
        if view is not None:
            itemsize = tensor.storage.kind.itemsize
            raw = memoryview(raw)[view[1] * itemsize : (view[1] + view[2]) * itemsize]
        reader.budget.take(_output_bytes(tensor), f"tensor {name[:80]!r}")
        out[name] = _materialise(tensor, raw, byteorder)
    return out


# ------------------------------------------------------------------------- zip


def _read_member(archive: zipfile.ZipFile, name: str, reader: _Reader) -> bytes:
    """Read one zip record, trusting neither its declared nor its inflated size.

    The declared size is charged to the budget first; at most one byte more than
    declared is ever inflated, and a record whose real size differs is refused.
    Only stored and deflated records are read: bzip2 and lzma inflate a whole chunk
    before ``zipfile`` can cut it to the declared size.
    """
    source = reader.source
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"checkpoint {source} lacks record {name!r}") from None
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(
            f"checkpoint {source}: record {name!r} uses unsupported compression "
            f"{info.compress_type}"
        )
    reader.budget.take(info.file_size, f"record {name!r}")
    try:
        with archive.open(info) as stream:
            data = stream.read(info.file_size + 1)
    except Exception as exc:  # CRC errors, truncated members, bad headers, encryption
        raise CheckpointError(
            f"checkpoint {source}: cannot read record {name!r}: {_exception_text(exc)}"
        ) from None
    if len(data) != info.file_size:
        raise CheckpointError(
            f"checkpoint {source}: record {name!r} holds {len(data)} bytes, declares "
            f"{info.file_size}"
        )
    return data


def _zip_directory_bytes(file: io.BufferedReader, size: int) -> int:
    """Size of the central directory the archive's end record declares (0 if none found).

    Read here because ``zipfile.ZipFile`` builds one ``ZipInfo`` per directory record
    (about 550 bytes for a 46-byte record) before anything can be checked.
    """
    tail_length = min(size, 22 + 0xFFFF)  # end record plus the longest comment
    file.seek(size - tail_length)
    tail = file.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return 0
    directory = _U32(tail, at + 12)[0]
    if directory == 0xFFFFFFFF and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
        record_at = _U64(tail, at - 12)[0]  # the zip64 end record, via its locator
        if record_at + 56 <= size:
            file.seek(record_at)
            record = file.read(56)
            if record[:4] == b"PK\x06\x06":
                directory = _U64(record, 40)[0]
    return min(directory, size)


def _read_zip(reader: _Reader, file: io.BufferedReader, size: int) -> dict[str, np.ndarray]:
    source = reader.source
    directory = _zip_directory_bytes(file, size)
    reader.budget.take(directory // _ZIP_RECORD_MIN_BYTES * _ZIP_ENTRY_BYTES, "the zip directory")
    try:
        archive = zipfile.ZipFile(file)
    except Exception as exc:  # BadZipFile, OSError, struct/overflow errors in headers
        raise CheckpointError(
            f"checkpoint {source} is a damaged zip archive: {_exception_text(exc)}"
        ) from None
    with archive:
        names = set(archive.namelist())
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{source} is a zip archive but not a PyTorch checkpoint (no <prefix>/data.pkl)"
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            order = _read_member(archive, prefix + "byteorder", reader).strip()
            if order not in (b"little", b"big"):
                raise CheckpointError(f"checkpoint {source} has unknown byteorder {order[:20]!r}")
            byteorder = "<" if order == b"little" else ">"
        obj, _ = reader.unpickle(_read_member(archive, pickles[0], reader), 0, legacy=False)
        tensors = _select_tensors(obj, source)
        cache: dict[str, bytes] = {}

        def fetch(key: str) -> bytes:
            if key not in cache:
                raw = _read_member(archive, f"{prefix}data/{key}", reader)
                kind, numel = reader.storages.declared[key]
                if len(raw) != numel * kind.itemsize:
                    raise CheckpointError(
                        f"checkpoint {source}: storage {key!r} declares {numel} "
                        f"{kind.name} elements but holds {len(raw)} bytes"
                    )
                cache[key] = raw
            return cache[key]

        return _materialise_all(reader, tensors, fetch, byteorder)


# ---------------------------------------------------------------------- legacy


def _not_a_checkpoint(source: str) -> CheckpointError:
    return CheckpointError(
        f"{source} is not a PyTorch checkpoint: neither a zip archive with data.pkl "
        "nor a legacy torch.save file (magic number missing)"
    )


def _read_legacy(reader: _Reader, data: bytes) -> dict[str, np.ndarray]:
    source = reader.source
    try:
        magic, pos = reader.unpickle(data, 0, legacy=True)
    except (UnsafeCheckpointError, CheckpointTooLargeError):
        raise
    except CheckpointError:
        raise _not_a_checkpoint(source) from None
    if type(magic) is not int or magic != _LEGACY_MAGIC:
        raise _not_a_checkpoint(source)
    protocol, pos = reader.unpickle(data, pos, legacy=True)
    if type(protocol) is not int or protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(
            f"checkpoint {source} has unsupported legacy protocol {_describe(protocol)}"
        )
    sys_info, pos = reader.unpickle(data, pos, legacy=True)
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    if not isinstance(little, bool):
        raise CheckpointError(f"checkpoint {source} has a malformed sys-info record")
    byteorder = "<" if little else ">"
    obj, pos = reader.unpickle(data, pos, legacy=True)
    keys, pos = reader.unpickle(data, pos, legacy=True)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"checkpoint {source} has a malformed storage key list")

    view = memoryview(data)
    storages: dict[str, memoryview] = {}
    for key in keys:
        if key not in reader.storages.declared or key in storages:
            raise CheckpointError(
                f"checkpoint {source} stores unreferenced or repeated storage {key[:80]!r}"
            )
        kind, numel = reader.storages.declared[key]
        if pos + 8 > len(data):
            raise CheckpointError(f"checkpoint {source} is truncated before storage {key[:80]!r}")
        count = int.from_bytes(data[pos : pos + 8], "little", signed=True)
        pos += 8
        if count != numel:
            raise CheckpointError(
                f"checkpoint {source}: storage {key[:80]!r} holds {count} elements, "
                f"its record declares {numel}"
            )
        nbytes = count * kind.itemsize
        if nbytes > len(data) - pos:
            raise CheckpointError(
                f"checkpoint {source} is truncated: storage {key[:80]!r} needs {nbytes} "
                f"bytes, {len(data) - pos} left"
            )
        storages[key] = view[pos : pos + nbytes]
        pos += nbytes

    tensors = _select_tensors(obj, source)

    def fetch(key: str) -> memoryview:
        if key not in storages:
            raise CheckpointError(f"checkpoint {source} is missing storage {key[:80]!r}")
        return storages[key]

    return _materialise_all(reader, tensors, fetch, byteorder)


# ------------------------------------------------------------------------ public


def read_checkpoint(
    path: str | os.PathLike[str], *, max_bytes: int | None = None
) -> dict[str, np.ndarray]:
    """Read the tensors of a PyTorch checkpoint as NumPy arrays, without torch.

    The file is never trusted: only the globals a tensor state_dict needs are
    resolved (to read-only stand-ins made for this call), each pickle is validated
    before it is unpickled, and every allocation is checked against ``max_bytes``
    before it happens. A refused file leaves nothing behind that could change a later
    read.

    Which tensors are returned: if the file holds a dict whose ``state_dict``,
    ``model``, ``model_state_dict`` or ``net`` entry (first match in that order) is a
    dict holding tensors, that dict's tensors; otherwise the top-level tensors. So an
    ImageNet-example training checkpoint (``{"epoch": ..., "state_dict": {...},
    "best_acc1": tensor(...), "optimizer": {...}}``) yields its ``state_dict``.
    Non-tensor entries are dropped.

    Args:
        path: A file written by ``torch.save`` (zip or legacy format).
        max_bytes: The most bytes the read may allocate, each charge checked before
            the allocation: records read or inflated from the file (and zipfile's index
            of them), the objects its pickles can build (a bound computed before
            unpickling) and the arrays returned. Default ``max(4 * file size, 64 MiB)``:
            room for the file, float32 copies of half-precision tensors and the pickle.

    Returns:
        ``{name: array}`` in the file's key order. float16 and bfloat16 become
        float32; other dtypes are kept. Arrays are C-contiguous, writeable and
        native-endian.

    Raises:
        UnsafeCheckpointError: The pickle references a global outside the allow-list
            (possible code execution), an unknown persistent-id type, or tries to
            modify an allow-listed object.
        CheckpointTooLargeError: Reading would exceed ``max_bytes``.
        CheckpointError: The file is missing, not a checkpoint, malformed, truncated or
            holds no tensors. The two above are subclasses.
        TypeError, ValueError: ``max_bytes`` is not a positive int.
    """
    source = os.fspath(path)
    if max_bytes is not None and (type(max_bytes) is not int):
        raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if not os.path.isfile(source):
        raise CheckpointError(f"checkpoint file not found: {source}")
    try:
        with open(source, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            reader = _Reader(source, max_bytes or _default_max_bytes(size))
            if file.read(4) == _ZIP_MAGIC:
                return _read_zip(reader, file, size)
            reader.budget.take(size, "the file's bytes")
            file.seek(0)
            data = file.read(size)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {source}: {_exception_text(exc)}") from exc
    return _read_legacy(reader, data)
