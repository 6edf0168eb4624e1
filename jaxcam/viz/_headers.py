"""Image headers, read (and checked for truncation) before any pixel is decoded.

An image's header states its size in a few bytes (a 235-byte PNG can declare 40000 x 1
or 100 MP); :func:`image_header` reads that size, and walks the file's structure to the
end, so that the caller can refuse a huge or truncated image before the decoder allocates
anything or fills the missing part with grey.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib

import numpy as np

__all__ = ["FORMATS", "ImageError", "ImageHeader", "image_format", "image_header"]


# --- image headers ---------------------------------------------------------------------

class ImageError(ValueError):
    """A file jaxcam will not decode: not a supported format, too large, truncated or
    corrupt. The message names the problem and, where there is one, the fix."""


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What an image file declares before its pixels.

    Attributes:
      format: ``"png"``, ``"jpeg"``, ``"webp"``, ``"bmp"`` or ``"tiff"``.
      width, height: the stored size in pixels (before any EXIF rotation).
      orientation: the EXIF orientation (1..8; 1 when absent or unreadable).
    """

    format: str
    width: int
    height: int
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


FORMATS = ("PNG", "JPEG", "WebP", "BMP", "TIFF")


def image_header(data: bytes) -> ImageHeader:
    """Reads the size of a PNG, JPEG, WebP, BMP or TIFF image, without decoding it.

    The file's structure is walked to its end (PNG chunks and their CRCs, JPEG markers up
    to the end-of-image marker, WebP chunks, the BMP pixel array, TIFF strips or tiles),
    so that a truncated file is refused here rather than half-decoded.

    Raises:
      ImageError: an unsupported format, a truncated or corrupt structure, or a zero size.
    """
    data = memoryview(data).cast("B")
    header = _PARSERS[image_format(bytes(data[:12]))](data)
    if header.width <= 0 or header.height <= 0:
        raise ImageError(f"the {header.format.upper()} header declares an empty image "
                         f"({header.width} x {header.height})")
    return header


def image_format(head: bytes) -> str:
    """The format named by a file's first 12 bytes: ``"png"``, ``"jpeg"``, ``"webp"``,
    ``"bmp"`` or ``"tiff"``.

    Raises:
      ImageError: none of them.
    """
    head = bytes(head[:12])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    raise ImageError(f"not an image format jaxcam reads ({', '.join(FORMATS)})")


def _need(data, end: int, what: str) -> None:
    if end > len(data):
        raise ImageError(f"truncated: the file ends at byte {len(data)}, inside the {what}")


def _png(data) -> ImageHeader:
    """PNG: IHDR first, every chunk whole and its CRC right, IEND at the end."""
    pos, width = 8, None
    orientation = 1
    while True:
        _need(data, pos + 8, "chunk header")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        _need(data, end, f"{kind.decode('latin-1')!r} chunk")
        body = data[pos + 8:end - 4]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            raise ImageError(f"corrupt: the CRC of the PNG {kind.decode('latin-1')!r} chunk "
                             "is wrong")
        if width is None:
            if kind != b"IHDR" or length != 13:
                raise ImageError("corrupt: the PNG does not start with an IHDR chunk")
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"eXIf":
            orientation = _exif_orientation(body)
        elif kind == b"IEND":
            return ImageHeader("png", width, height, orientation)
        pos = end


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                  0xCF})
# A marker inside entropy-coded data: 0xFF followed by anything but a stuffed zero, a
# restart marker (RST0..7) or a fill byte.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg(data) -> ImageHeader:
    """JPEG: segments to the frame header (SOF), then scans, up to the EOI marker."""
    pos, size, orientation = 2, None, 1
    while True:
        _need(data, pos + 2, "marker")
        if data[pos] != 0xFF:
            raise ImageError(f"corrupt: no JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            if size is None:
                raise ImageError("corrupt: the JPEG ends before its frame header")
            return ImageHeader("jpeg", size[1], size[0], orientation)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a segment
            pos += 2
            continue
        _need(data, pos + 4, "segment length")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        end = pos + 2 + length
        _need(data, end, f"segment of marker 0x{marker:02X}")
        body = data[pos + 4:end]
        if marker in _SOF:
            if size is not None:
                raise ImageError("corrupt: the JPEG has two frame headers")
            if length < 8:
                raise ImageError("corrupt: the JPEG frame header is too short")
            size = struct.unpack(">HH", body[1:5])  # (height, width)
        elif marker == 0xE1 and orientation == 1 and bytes(body[:6]) == b"Exif\x00\x00":
            orientation = _exif_orientation(body[6:])
        pos = end
        if marker == 0xDA:  # a scan: entropy-coded data runs to the next real marker
            if size is None:
                raise ImageError("corrupt: the JPEG has a scan before its frame header")
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                raise ImageError("truncated: the JPEG ends inside its image data (no "
                                 "end-of-image marker)")
            pos = found.start()


def _webp(data) -> ImageHeader:
    """WebP: the RIFF container whole, size from the VP8 / VP8L / VP8X chunk."""
    (riff_size,) = struct.unpack("<I", data[4:8])
    _need(data, 8 + riff_size, "RIFF container")
    pos, end, size, orientation = 12, 8 + riff_size, None, 1
    while pos + 8 <= end:
        kind, length = struct.unpack("<4sI", data[pos:pos + 8])
        body_end = pos + 8 + length
        _need(data, body_end, f"{kind.decode('latin-1')!r} chunk")
        body = data[pos + 8:body_end]
        if size is None:
            size = _webp_size(kind, bytes(body[:10]))
        if kind == b"EXIF":
            exif = bytes(body)
            orientation = _exif_orientation(exif[6:] if exif.startswith(b"Exif\x00\x00")
                                            else exif)
        pos = body_end + (length & 1)
    if size is None:
        raise ImageError("corrupt: the WebP file has no image chunk")
    return ImageHeader("webp", *size, orientation)


def _webp_size(kind: bytes, body: bytes) -> tuple[int, int]:
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", body[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        (bits,) = struct.unpack("<I", body[1:5])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(body) >= 10:
        return (int.from_bytes(body[4:7], "little") + 1,
                int.from_bytes(body[7:10], "little") + 1)
    raise ImageError(f"corrupt: the WebP file starts with a {kind!r} chunk, not an image")


def _bmp(data) -> ImageHeader:
    """BMP: size from the info header; an uncompressed pixel array must be whole."""
    _need(data, 30, "BMP header")
    offset, info_size = struct.unpack("<II", data[10:18])
    if info_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _, bits = struct.unpack("<HHHH", data[18:26])
        compression = 0
    else:
        _need(data, 34, "BMP header")
        width, height, _, bits, compression = struct.unpack("<iiHHI", data[18:34])
    height = abs(height)  # negative: rows stored top-down
    if compression in (0, 3, 6) and width > 0:  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS
        stride = (width * bits + 31) // 32 * 4
        _need(data, offset + stride * height, "pixel array")
    return ImageHeader("bmp", width, height)


_TIFF_TYPES = {1: "u1", 3: "u2", 4: "u4", 16: "u8"}  # BYTE, SHORT, LONG, LONG8
# The tags jaxcam reads. A scalar's first value only; an array's values as a view of the
# file's bytes (checked to lie in the file), never unpacked into Python objects.
_TIFF_SCALARS = frozenset({256, 257, 274})          # width, height, orientation
_TIFF_ARRAYS = frozenset({273, 279, 324, 325})      # strip / tile offsets and byte counts


def _tiff_ifd0(data, wanted: frozenset[int] = _TIFF_SCALARS | _TIFF_ARRAYS
               ) -> dict[int, int | np.ndarray]:
    """The ``wanted`` integer tags of a TIFF structure's first directory.

    A scalar tag maps to its first value; an array tag (strip and tile offsets and
    counts) to a read-only uint64 array. Tags not wanted are skipped unread, a tag given
    twice counts once (the first), a tag with no values is absent: the cost is bounded by
    the directory's size and the wanted arrays, each of which must lie in the data.

    Raises ImageError when the directory or a wanted value lies outside the data.
    """
    order = "<" if bytes(data[:2]) == b"II" else ">"
    (magic,) = struct.unpack(order + "H", data[2:4])
    big = magic == 43
    if big:
        _need(data, 16, "BigTIFF header")
        (ifd,) = struct.unpack(order + "Q", data[8:16])
        count_fmt, inline = "Q", 8
    else:
        _need(data, 8, "TIFF header")
        (ifd,) = struct.unpack(order + "I", data[4:8])
        count_fmt, inline = "H", 4
    count_size = struct.calcsize(count_fmt)
    _need(data, ifd + count_size, "TIFF directory")
    (n,) = struct.unpack(order + count_fmt, data[ifd:ifd + count_size])
    entry = np.dtype([("tag", order + "u2"), ("kind", order + "u2"),
                      ("count", order + ("u8" if big else "u4")), ("value", f"V{inline}")])
    _need(data, ifd + count_size + n * entry.itemsize, "TIFF directory")
    entries = np.frombuffer(data, entry, count=n, offset=ifd + count_size)
    tags: dict[int, int | np.ndarray] = {}
    for i in np.flatnonzero(np.isin(entries["tag"], list(wanted))):
        tag, kind, count = (int(v) for v in (entries["tag"][i], entries["kind"][i],
                                             entries["count"][i]))
        if tag in tags or kind not in _TIFF_TYPES or count == 0 or (
                tag in _TIFF_ARRAYS and kind == 1):     # offsets are SHORT, LONG or LONG8
            continue
        dtype = np.dtype(order + _TIFF_TYPES[kind])
        if count * dtype.itemsize <= inline:  # the values are in the entry itself
            where = ifd + count_size + i * entry.itemsize + entry.itemsize - inline
        else:  # stored elsewhere: checked against the data first
            (where,) = struct.unpack(order + ("Q" if big else "I"), bytes(entries["value"][i]))
            _need(data, where + count * dtype.itemsize, f"TIFF tag {tag}")
        if tag in _TIFF_SCALARS:
            count = 1
        values = np.frombuffer(data, dtype, count=count, offset=where).astype(np.uint64)
        tags[tag] = int(values[0]) if tag in _TIFF_SCALARS else values
    return tags


def _tiff(data) -> ImageHeader:
    """TIFF: size from the first directory; its strips or tiles must lie in the file."""
    tags = _tiff_ifd0(data)
    if 256 not in tags or 257 not in tags:
        raise ImageError("corrupt: the TIFF directory has no image width or height")
    for offsets, counts in ((273, 279), (324, 325)):  # strips, tiles
        if offsets in tags and counts in tags:
            n = min(tags[offsets].size, tags[counts].size)
            starts, sizes = tags[offsets][:n], tags[counts][:n]
            if n:                 # each at most the file's size first: the sum cannot wrap
                _need(data, int(max(starts.max(), sizes.max())), "image data")
                _need(data, int((starts + sizes).max()), "image data")
    return ImageHeader("tiff", tags[256], tags[257], tags.get(274, 1))


_PARSERS = {"png": _png, "jpeg": _jpeg, "webp": _webp, "bmp": _bmp, "tiff": _tiff}


def _exif_orientation(exif) -> int:
    """The orientation tag (274) of EXIF data (a TIFF structure); 1 when unreadable, as
    decoders treat a broken EXIF block."""
    exif = memoryview(exif).cast("B")
    if bytes(exif[:4]) not in (b"II*\x00", b"MM\x00*"):
        return 1
    try:
        value = _tiff_ifd0(exif, frozenset({274})).get(274, 1)
    except (ImageError, struct.error, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1
