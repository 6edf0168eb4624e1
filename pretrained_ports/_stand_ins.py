"""The stand-ins a checkpoint's pickle may name: an allow-list of torch's globals, each
resolved to an object made fresh for one read, slotted and read-only, so no pickle
opcode (REDUCE, BUILD, SETITEM, setattr...) can alter what another read sees; tensors
are records checked against their storages."""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

import numpy as np

# Every size, stride, offset and element count from the file lies below 2**63, as in
# torch, and a tensor has at most 32 dimensions.
MAX_INT = 2**63
_MAX_NDIM = 32
# An empty tensor owns no bytes, but numpy still refuses shapes whose nonzero
# dimensions multiply past its index range.
_MAX_EMPTY_EXTENT = 1 << 48


class Mutation(Exception):
    """A pickle tried to alter a reader object; turned into an UnsafeCheckpointError."""


class BadRecord(Exception):
    """A stand-in refused its arguments; turned into a CheckpointError naming the file."""


class Frozen:
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
        raise Mutation(f"{type(self).__name__.lstrip('_')} {getattr(self, 'name', '')}".strip())

    __setattr__ = __delattr__ = __setstate__ = __setitem__ = __delitem__ = _refuse

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Kind(Frozen):
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


class StorageRef(Frozen):
    """A storage named by a persistent id; its bytes are fetched after unpickling.

    Attributes:
        key: The record name (zip) or root key (legacy).
        kind: How its elements are stored.
        numel: The root storage's declared element count.
        view: Legacy only: ``(view_key, offset, size)`` window of the root, in elements.
    """

    __slots__ = ("key", "kind", "numel", "view")
    key: str
    kind: Kind
    numel: int
    view: tuple[str, int, int] | None

    @property
    def nbytes(self) -> int:
        """Bytes the tensor may address: the view's window, else the whole storage."""
        return (self.view[2] if self.view is not None else self.numel) * self.kind.itemsize


class TensorRef(Frozen):
    """A tensor awaiting materialisation: a strided window into a storage, checked."""

    __slots__ = ("storage", "offset", "size", "stride", "kind")
    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    kind: Kind


class Global(Frozen):
    """Stand-in for an allow-listed callable global; calling it runs ``build``."""

    __slots__ = ("name", "build")
    name: str
    build: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.build(*args)


def exception_text(exc: BaseException) -> str:
    """A foreign exception as one short line (its text may quote the file's bytes)."""
    return f"{type(exc).__name__}: {' '.join(str(exc)[:200].split())}"


def describe(value: Any) -> str:
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
    if isinstance(value, Frozen):
        return f"{type(value).__name__.lstrip('_')} {getattr(value, 'name', '')}".strip()
    if isinstance(value, tuple) and len(value) <= 8 and all(
        v is None or isinstance(v, (int, str)) for v in value
    ):
        return "(" + ", ".join(map(describe, value)) + ("," if len(value) == 1 else "") + ")"
    length = f" of length {len(value)}" if isinstance(value, (tuple, list, dict)) else ""
    return f"a {type(value).__name__}{length}"


def _ints(value: Any, what: str) -> tuple[int, ...]:
    """``value`` if it is a tuple of non-negative ints (bools excluded), else raise."""
    if type(value) is not tuple or (
        value and (not set(map(type, value)) <= {int} or min(value) < 0
                   or max(value) >= MAX_INT)
    ):
        raise BadRecord(f"malformed tensor record: {what} {describe(value)}")
    return value


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any
) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2``."""
    if not isinstance(storage, StorageRef):
        raise BadRecord(f"malformed tensor record: storage is {describe(storage)}")
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
) -> TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v3`` (raw-byte storage + dtype)."""
    if not isinstance(storage, StorageRef):
        raise BadRecord(f"malformed tensor record: storage is {describe(storage)}")
    if not isinstance(dtype, Kind):
        raise BadRecord(f"malformed tensor record: dtype {describe(dtype)}")
    return _tensor(storage, storage_offset, size, stride, dtype)


def _tensor(storage: StorageRef, offset: Any, size: Any, stride: Any, kind: Kind) -> TensorRef:
    """Validate a tensor record against its storage's declared size, then record it.

    The furthest element the strided window addresses must lie inside the storage, so
    no later step can read (or size an array) beyond the storage's bytes.
    """
    if type(offset) is not int or not 0 <= offset < MAX_INT:
        raise BadRecord(f"malformed tensor record: storage offset {describe(offset)}")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or len(size) > _MAX_NDIM:
        raise BadRecord(
            f"malformed tensor record: size {describe(size)} vs stride {describe(stride)}"
        )
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if (last + 1) * kind.itemsize > storage.nbytes:
            raise BadRecord(
                f"malformed tensor record: size {describe(size)}, stride {describe(stride)} "
                f"and offset {offset} address element {last} of a {storage.nbytes}-byte storage"
            )
    elif math.prod(max(n, 1) for n in size) > _MAX_EMPTY_EXTENT:  # numpy refuses these
        raise BadRecord(f"malformed tensor record: size {describe(size)}")
    return TensorRef(storage, offset, size, stride, kind)


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


def stand_ins() -> dict[tuple[str, str], Frozen]:
    """Fresh stand-ins for the allow-listed globals, made for one read only."""
    allowed: dict[tuple[str, str], Frozen] = {
        (module, name): Global(f"{module}.{name}", build) for module, name, build in _CALLABLES
    }
    for full_name, code, bfloat16 in _STORAGE_KINDS:
        module, _, name = full_name.rpartition(".")
        allowed[(module, name)] = Kind(full_name, code, bfloat16, np.dtype(code).itemsize)
    return allowed
