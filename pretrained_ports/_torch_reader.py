"""Read PyTorch checkpoints (tensor state_dicts) into NumPy arrays without importing torch.

Two on-disk layouts are understood:

Zip format (``torch.save`` default since torch 1.6):
    A zip archive with ``<prefix>/data.pkl`` (the pickled object), one uncompressed
    record ``<prefix>/data/<key>`` per storage holding its raw bytes, and optionally
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
elements. Unpickling goes through an allow-list: only the handful of globals a tensor
state_dict needs are accepted, each replaced by a harmless local stand-in, and torch is
never imported. Any other global raises :class:`UnsafeCheckpointError`.

float16 and bfloat16 tensors are returned as float32 (exactly; every half/bfloat16 value
is representable in float32). Every other dtype is kept, integers stay integers, and all
arrays are C-contiguous, writeable and in native byte order.
"""

from __future__ import annotations

import _compat_pickle
import collections
import dataclasses
import io
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from pretrained_ports._errors import CheckpointError, UnsafeCheckpointError

__all__ = ["read_checkpoint"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"


@dataclasses.dataclass(frozen=True)
class _Kind:
    """Stand-in for a torch storage class or dtype: how to decode the raw bytes.

    Attributes:
        name: The torch global this stands in for, e.g. ``"torch.FloatStorage"``.
        code: NumPy type code of one stored element without byte order, e.g. ``"f4"``.
        bfloat16: The elements are bfloat16 bit patterns stored as ``u2``.
    """

    name: str
    code: str
    bfloat16: bool = False


_STORAGE_KINDS = [
    _Kind("torch.FloatStorage", "f4"),
    _Kind("torch.DoubleStorage", "f8"),
    _Kind("torch.HalfStorage", "f2"),
    _Kind("torch.BFloat16Storage", "u2", bfloat16=True),
    _Kind("torch.LongStorage", "i8"),
    _Kind("torch.IntStorage", "i4"),
    _Kind("torch.ShortStorage", "i2"),
    _Kind("torch.CharStorage", "i1"),
    _Kind("torch.ByteStorage", "u1"),
    _Kind("torch.BoolStorage", "b1"),
    _Kind("torch.ComplexFloatStorage", "c8"),
    _Kind("torch.ComplexDoubleStorage", "c16"),
    # Dtypes without a legacy storage class are saved as an UntypedStorage (raw
    # bytes) plus the dtype itself, rebuilt by ``_rebuild_tensor_v3``.
    _Kind("torch.uint16", "u2"),
    _Kind("torch.uint32", "u4"),
    _Kind("torch.uint64", "u8"),
    _Kind("torch.storage.UntypedStorage", "u1"),
]


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are fetched after unpickling."""

    key: str
    kind: _Kind
    view: tuple[str, int, int] | None = None


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor awaiting materialisation: a strided window into a storage."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    kind: _Kind


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise CheckpointError(f"malformed tensor record: {what} {value!r} is not a tuple of ints")
    return value


def _rebuild_tensor(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2``."""
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"malformed tensor record: storage is {type(storage).__name__}")
    (offset,) = _int_tuple((storage_offset,), "storage offset")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointError(f"malformed tensor record: size {size} vs stride {stride}")
    return _TensorRef(storage, offset, size, stride, storage.kind)


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
    tensor = _rebuild_tensor(storage, storage_offset, size, stride)
    if not isinstance(dtype, _Kind):
        raise CheckpointError(f"malformed tensor record: dtype {dtype!r}")
    return dataclasses.replace(tensor, kind=dtype)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter[_with_state]``: keep the data."""
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
}
for _kind in _STORAGE_KINDS:
    _module, _, _attr = _kind.name.rpartition(".")
    _ALLOWED[(_module, _attr)] = _kind
del _kind, _module, _attr


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and storage persistent ids."""

    def __init__(self, file: IO[bytes], source: str, legacy: bool) -> None:
        super().__init__(file)
        self._source = source
        self._legacy = legacy
        self.storage_kinds: dict[str, _Kind] = {}

    def find_class(self, module: str, name: str) -> Any:
        written = f"{module}.{name}"
        # Protocol 0-2 pickles may spell globals the Python 2 way (``__builtin__.eval``);
        # translate like pickle itself would so the allow-list and message see the real one.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        spelled = "" if written == f"{module}.{name}" else f" (written as '{written}')"
        raise UnsafeCheckpointError(
            f"refusing to load global '{module}.{name}'{spelled} from checkpoint "
            f"{self._source}: only tensor state_dicts are allowed"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafeCheckpointError(
                f"refusing persistent id {kind!r} in checkpoint {self._source}: "
                "only tensor storages are allowed"
            )
        if len(pid) != (6 if self._legacy else 5) or not isinstance(pid[1], _Kind):
            raise CheckpointError(f"malformed storage record {pid!r} in {self._source}")
        key, view = pid[2], pid[5] if self._legacy else None
        if view is not None:
            if not (
                isinstance(view, tuple)
                and len(view) == 3
                and isinstance(view[0], str)
                and all(isinstance(v, int) and v >= 0 for v in view[1:])
            ):
                raise CheckpointError(f"malformed storage view {view!r} in {self._source}")
        self.storage_kinds[str(key)] = pid[1]
        return _StorageRef(str(key), pid[1], view)


def _unpickle(
    file: IO[bytes], source: str, legacy: bool, kinds: dict[str, _Kind] | None = None
) -> Any:
    """Unpickle one object; record the storages it references into ``kinds``."""
    unpickler = _RestrictedUnpickler(file, source, legacy)
    try:
        obj = unpickler.load()
    except CheckpointError:
        raise
    except Exception as exc:  # any other failure means the pickle stream is malformed
        raise CheckpointError(f"malformed pickle in checkpoint {source}: {exc}") from exc
    if kinds is not None:
        kinds.update(unpickler.storage_kinds)
    return obj


def _materialise(
    tensor: _TensorRef, raw: bytes, byteorder: str, source: str, name: str
) -> np.ndarray:
    """Copy a strided view of ``raw`` (the storage's bytes) into a fresh native array."""
    kind = tensor.kind
    dtype = np.dtype(byteorder + kind.code)
    if len(raw) % dtype.itemsize:
        raise CheckpointError(f"storage of '{name}' in {source} is truncated")
    flat = np.frombuffer(raw, dtype=dtype)
    if 0 in tensor.size:
        out = np.empty(tensor.size, dtype=dtype.newbyteorder("="))
    else:
        extent = tensor.offset + 1 + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
        if extent > flat.size:
            raise CheckpointError(
                f"storage of '{name}' in {source} is truncated: tensor needs {extent} "
                f"elements, storage holds {flat.size}"
            )
        view = np.lib.stride_tricks.as_strided(
            flat[tensor.offset :],
            shape=tensor.size,
            strides=tuple(s * dtype.itemsize for s in tensor.stride),
            writeable=False,
        )
        out = np.array(view, dtype=dtype.newbyteorder("="), order="C", copy=True)
    if kind.bfloat16:
        bits = out.astype(np.uint32)
        bits <<= 16
        return bits.view(np.float32)
    if kind.code == "f2":
        return out.astype(np.float32)
    return out


def _select_tensors(obj: Any, source: str) -> dict[str, _TensorRef]:
    """Pick the flat ``{name: tensor}`` mapping out of the unpickled object."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(obj).__name__}, not a state_dict"
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, _TensorRef)}
    if tensors:
        return tensors
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            tensors = {str(k): v for k, v in inner.items() if isinstance(v, _TensorRef)}
            if tensors:
                return tensors
    raise CheckpointError(f"checkpoint {source} contains no tensors")


def _read_zip(path: str) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is a damaged zip archive: {exc}") from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{path} is a zip archive but not a PyTorch checkpoint (no <prefix>/data.pkl)"
            )
        prefix = pickles[0][: -len("data.pkl")]

        def read(member: str) -> bytes:
            try:
                return archive.read(member)
            except KeyError:
                raise CheckpointError(f"checkpoint {path} lacks record {member}") from None
            except Exception as exc:  # CRC errors, truncated members, bad headers
                raise CheckpointError(f"checkpoint {path}: cannot read {member}: {exc}") from exc

        byteorder = "<"
        if prefix + "byteorder" in archive.namelist():
            order = read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointError(f"checkpoint {path} has unknown byteorder {order!r}")
            byteorder = "<" if order == "little" else ">"
        obj = _unpickle(io.BytesIO(read(pickles[0])), path, legacy=False)
        tensors = _select_tensors(obj, path)
        cache: dict[str, bytes] = {}
        out = {}
        for name, tensor in tensors.items():
            key = tensor.storage.key
            if key not in cache:
                cache[key] = read(f"{prefix}data/{key}")
            out[name] = _materialise(tensor, cache[key], byteorder, path, name)
        return out


def _read_exact(file: IO[bytes], n: int, path: str) -> bytes:
    data = file.read(n)
    if len(data) != n:
        raise CheckpointError(
            f"checkpoint {path} is truncated: storage data ends after {len(data)} of {n} bytes"
        )
    return data


def _read_legacy(path: str, file: IO[bytes]) -> dict[str, np.ndarray]:
    try:
        magic = _RestrictedUnpickler(file, path, legacy=True).load()
    except CheckpointError:
        raise
    except Exception:
        magic = None
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: neither a zip archive with data.pkl "
            "nor a legacy torch.save file (magic number missing)"
        )
    protocol = _unpickle(file, path, legacy=True)
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"checkpoint {path} has unsupported legacy protocol {protocol!r}")
    sys_info = _unpickle(file, path, legacy=True)
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    byteorder = "<" if little else ">"

    kinds: dict[str, _Kind] = {}
    obj = _unpickle(file, path, legacy=True, kinds=kinds)
    keys = _unpickle(file, path, legacy=True)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"checkpoint {path} has a malformed storage key list")

    storages: dict[str, bytes] = {}
    for key in keys:
        if key not in kinds:
            raise CheckpointError(f"checkpoint {path} stores unreferenced storage {key!r}")
        count = int.from_bytes(_read_exact(file, 8, path), "little", signed=True)
        itemsize = np.dtype(kinds[key].code).itemsize
        if count < 0:
            raise CheckpointError(f"checkpoint {path} has a negative storage size")
        storages[key] = _read_exact(file, count * itemsize, path)

    tensors = _select_tensors(obj, path)
    out = {}
    for name, tensor in tensors.items():
        ref = tensor.storage
        if ref.key not in storages:
            raise CheckpointError(f"checkpoint {path} is missing storage {ref.key!r}")
        raw = storages[ref.key]
        if ref.view is not None:
            itemsize = np.dtype(ref.kind.code).itemsize
            _, start, length = ref.view
            raw = raw[start * itemsize : (start + length) * itemsize]
            if len(raw) != length * itemsize:
                raise CheckpointError(f"storage view of '{name}' in {path} is out of bounds")
        out[name] = _materialise(tensor, raw, byteorder, path, name)
    return out


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the tensors of a PyTorch checkpoint as NumPy arrays, without torch.

    Args:
        path: A file written by ``torch.save`` (zip or legacy format) holding a
            state_dict, or a dict wrapping one under ``'state_dict'`` or ``'model'``.

    Returns:
        ``{name: array}`` in the file's key order. Top-level non-tensor entries (epoch
        counters, strings, nested dicts) are dropped. float16 and bfloat16 become
        float32; other dtypes are kept. Arrays are C-contiguous and native-endian.

    Raises:
        UnsafeCheckpointError: The pickle references a global outside the allow-list
            (possible code execution) or an unknown persistent-id type.
        CheckpointError: The file is missing, not a checkpoint, malformed, truncated or
            holds no tensors.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise CheckpointError(f"checkpoint file not found: {source}")
    try:
        with open(source, "rb") as file:
            if file.read(4) == _ZIP_MAGIC:
                return _read_zip(source)
            file.seek(0)
            return _read_legacy(source, file)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {source}: {exc}") from exc
