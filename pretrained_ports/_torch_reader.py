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
* Each pickle is scanned (:func:`scan_pickle`) before the C unpickler sees it: memo
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
import functools
import io
import math
import os
import pickle
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from pretrained_ports._errors import (
    CheckpointError,
    CheckpointTooLargeError,
    UnsafeCheckpointError,
)
from pretrained_ports._pickle_scan import U32, U64, ScanError, scan_pickle
from pretrained_ports._stand_ins import (MAX_INT, BadRecord, Frozen, Kind, Mutation, StorageRef,
                                        TensorRef, describe, exception_text, stand_ins)

__all__ = ["read_checkpoint"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"

_MIB = 1 << 20
_BUDGET_FLOOR = 64 * _MIB
_BUDGET_FILE_MULTIPLE = 4
# zipfile's memory per central-directory record (a ZipInfo, its name, the name index;
# measured ~550 bytes) and the smallest such record.
_ZIP_ENTRY_BYTES = 640
_ZIP_RECORD_MIN_BYTES = 46


# --------------------------------------------------------------------------- budget


class _Budget:
    """The bytes one read may still allocate; charged before every allocation.

    Charged: records read (or inflated) from the file, the objects each pickle can
    build (estimated by :func:`scan_pickle`), and the arrays returned.
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


# -------------------------------------------------------------------- unpickling


class _Storages:
    """The storages one read's pickles reference: key -> (kind, declared numel)."""

    __slots__ = ("declared", "source")

    def __init__(self, source: str) -> None:
        self.declared: dict[str, tuple[Kind, int]] = {}
        self.source = source

    def declare(self, key: str, kind: Kind, numel: int) -> None:
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
        allowed: dict[tuple[str, str], Frozen],
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

    def persistent_load(self, pid: Any) -> StorageRef:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise UnsafeCheckpointError(
                f"refusing persistent id {describe(kind)} in checkpoint {self._source}: "
                "only tensor storages are allowed"
            )
        if (
            len(pid) != (6 if self._legacy else 5)
            or not isinstance(pid[1], Kind)
            or not isinstance(pid[2], str)
            or type(pid[4]) is not int
            or not 0 <= pid[4] < MAX_INT // 16  # at most 16-byte elements: bytes < 2**63
        ):
            raise CheckpointError(f"malformed storage record {describe(pid)} in {self._source}")
        kind, key, numel = pid[1], pid[2], pid[4]
        view = pid[5] if self._legacy else None
        if view is not None:
            if not (
                isinstance(view, tuple)
                and len(view) == 3
                and isinstance(view[0], str)
                and all(type(v) is int and 0 <= v < MAX_INT for v in view[1:])
                and view[1] + view[2] <= numel
            ):
                raise CheckpointError(
                    f"malformed storage view {describe(view)} in {self._source}"
                )
        self._storages.declare(key, kind, numel)
        return StorageRef(key, kind, numel, view)


class _Reader:
    """One read's state: its source, budget, stand-ins and declared storages."""

    __slots__ = ("source", "budget", "allowed", "storages")

    def __init__(self, source: str, max_bytes: int) -> None:
        self.source = source
        self.budget = _Budget(max_bytes, source)
        self.allowed = stand_ins()
        self.storages = _Storages(source)

    def unpickle(self, data: bytes, start: int, legacy: bool) -> tuple[Any, int]:
        """Scan, charge and unpickle the pickle at ``data[start:]``; return it and its end."""
        try:
            end, cost = scan_pickle(data, start)
        except ScanError as exc:
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
        except BadRecord as exc:
            raise CheckpointError(f"checkpoint {self.source}: {exc}") from None
        except Mutation as exc:
            raise UnsafeCheckpointError(
                f"refusing checkpoint {self.source}: its pickle tries to modify {exc}"
            ) from None
        except Exception as exc:  # any other failure means the pickle stream is malformed
            raise CheckpointError(
                f"malformed pickle in checkpoint {self.source}: {exception_text(exc)}"
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


def _materialise(tensor: TensorRef, raw: memoryview | bytes, byteorder: str) -> np.ndarray:
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


def _output_bytes(tensor: TensorRef) -> int:
    """Bytes of the array ``_materialise`` returns (bfloat16 and float16 widen to 4)."""
    kind = tensor.kind
    itemsize = 4 if kind.bfloat16 or kind.code == "f2" else kind.itemsize
    return math.prod(tensor.size) * itemsize


# ------------------------------------------------------------- choosing tensors

# Wrapper keys that may hold the state_dict, in order of preference.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")


def _tensors_in(mapping: Any, source: str) -> dict[str, TensorRef]:
    if not isinstance(mapping, dict):
        return {}
    tensors = {}
    for key, value in mapping.items():
        if isinstance(value, TensorRef):
            if not isinstance(key, str):
                raise CheckpointError(
                    f"checkpoint {source} names a tensor {describe(key)}, not a string"
                )
            tensors[key] = value
    return tensors


def _select_tensors(obj: Any, source: str) -> dict[str, TensorRef]:
    """Pick the flat ``{name: tensor}`` mapping out of the unpickled object.

    The first of ``state_dict``, ``model``, ``model_state_dict``, ``net`` whose value is
    a dict holding tensors wins; otherwise the top-level tensors. So a training
    checkpoint ``{"state_dict": {...}, "best_acc1": tensor(...)}`` yields the model, not
    its metric.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {source} holds {describe(obj)}, not a state_dict")
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
    tensors: dict[str, TensorRef],
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
            f"checkpoint {source}: cannot read record {name!r}: {exception_text(exc)}"
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
    directory = U32(tail, at + 12)[0]
    if directory == 0xFFFFFFFF and at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07":
        record_at = U64(tail, at - 12)[0]  # the zip64 end record, via its locator
        if record_at + 56 <= size:
            file.seek(record_at)
            record = file.read(56)
            if record[:4] == b"PK\x06\x06":
                directory = U64(record, 40)[0]
    return min(directory, size)


def _read_zip(reader: _Reader, file: io.BufferedReader, size: int) -> dict[str, np.ndarray]:
    source = reader.source
    directory = _zip_directory_bytes(file, size)
    reader.budget.take(directory // _ZIP_RECORD_MIN_BYTES * _ZIP_ENTRY_BYTES, "the zip directory")
    try:
        archive = zipfile.ZipFile(file)
    except Exception as exc:  # BadZipFile, OSError, struct/overflow errors in headers
        raise CheckpointError(
            f"checkpoint {source} is a damaged zip archive: {exception_text(exc)}"
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
            f"checkpoint {source} has unsupported legacy protocol {describe(protocol)}"
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
        raise CheckpointError(f"cannot read checkpoint {source}: {exception_text(exc)}") from exc
    return _read_legacy(reader, data)
