"""Hostile and careless inputs, second round: image headers and checkpoint integers
bounded in time and memory, per-photo failures as records, the output folder locked,
excluded from discovery and resumed only with the same options, one record per photo,
finite target arrays, temporaries named and cleaned, a private compilation cache.

Each hostile file is built here, small. Budgets: under 1 s of CPU and 50 MB of extra
memory (traced allocations, NumPy's included) for any file under 2 MB.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_reader_files import checkpoint, dump, p_dict, p_tensor

import jaxcam
from jaxcam import batch, targets, viz
from jaxcam.viz import ImageError, image_header
from pretrained_ports import CheckpointError, read_checkpoint

MB = 1 << 20
SECONDS = 1.0
EXTRA_BYTES = 50 * MB


def _bounded(fn, *args):
    """``fn(*args)``'s result or exception, asserting the time budget (a plain run) and
    the memory budget (a second run, traced: tracing slows allocations down)."""
    def run():
        try:
            return fn(*args), None
        except Exception as e:               # noqa: BLE001 - re-raised below
            return None, e

    start = time.process_time()
    run()
    seconds = time.process_time() - start
    tracemalloc.start()
    try:
        result, error = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < SECONDS, f"{seconds:.2f} s of CPU"
    assert peak < EXTRA_BYTES, f"{peak / MB:.0f} MB"
    if error is not None:
        raise error
    return result


# --- 1, 2: the TIFF / EXIF directory parser

def _tiff(entries: list[tuple[int, int, int, bytes]], tail: bytes = b"", *,
          order: str = "<") -> bytes:
    """A classic TIFF: header, one directory of ``(tag, type, count, value/offset)``
    entries, then ``tail`` (at offset 8 + 2 + 12 n + 4)."""
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    body = struct.pack(order + "H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\0")
    return head + body + b"\0\0\0\0" + tail


def _directory_bomb(n_tags: int, values: int) -> bytes:
    """``n_tags`` tags of ``values`` LONGs each, all pointing at one region (the audit's
    184 kB file that took 3 GB): only width, height and the strips are real."""
    region = 8 + 2 + 12 * (n_tags + 4) + 4
    entries = [(256, 3, 1, struct.pack("<H", 4)), (257, 3, 1, struct.pack("<H", 4)),
               (273, 4, 1, struct.pack("<I", region)), (279, 4, 1, struct.pack("<I", 16))]
    for i in range(n_tags):        # strip offsets and counts repeated, and unknown tags
        tag = (273, 279, 40000 + i % 1000)[i % 3]
        entries.append((tag, 4, values, struct.pack("<I", region)))
    entries.sort(key=lambda e: e[0])
    return _tiff(entries, b"\x01" * (values * 4))


def test_tiff_directory_bomb_is_read_in_bounded_time_and_memory():
    data = _directory_bomb(2000, 40000)
    assert len(data) < 200_000
    header = _bounded(image_header, data)
    assert (header.format, header.width, header.height) == ("tiff", 4, 4)


def _exif(entries) -> bytes:
    return _tiff(entries)


def _jpeg_with_exif(exif: bytes) -> bytes:
    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    jpeg = jpeg.tobytes()
    app1 = b"Exif\x00\x00" + exif
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def _png_with_exif(exif: bytes) -> bytes:
    import zlib

    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    png = png.tobytes()
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(chunk[4:]))
    return png[:33] + chunk + png[33:]          # after IHDR (8 + 25 bytes)


def test_exif_segment_bomb_in_jpeg_and_png_is_bounded():
    n, values = 5000, 2000                       # a 64 kB EXIF block: one JPEG segment
    region = 8 + 2 + 12 * n + 4
    entries = [(274, 3, values, struct.pack("<I", region)) for _ in range(n)]
    exif = _exif(entries) + struct.pack("<H", 6) * values
    assert len(exif) < 65_000
    for data in (_jpeg_with_exif(exif), _png_with_exif(exif)):
        header = _bounded(image_header, data)
        assert header.orientation == 6 and header.width == 8


@pytest.mark.parametrize("tag", [274, 256])
def test_a_tag_without_values_is_absent_not_a_crash(tmp_path, tag):
    """Count 0: the orientation is the default; a missing width refuses the file."""
    entries = [(256, 3, 1, struct.pack("<H", 4)), (257, 3, 1, struct.pack("<H", 4)),
               (274, 3, 1, struct.pack("<H", 3))]
    entries = [(t, k, 0 if t == tag else c, v) for t, k, c, v in entries]
    exif = _exif(entries)
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg_with_exif(exif))
    if tag == 274:
        assert image_header(path.read_bytes()).orientation == 1
        assert viz.read_image(path).shape == (8, 8, 3)
        assert image_header(_tiff(entries, b"\0" * 16)).orientation == 1
    else:
        with pytest.raises(ImageError, match="no image width"):
            image_header(_tiff(entries))


def test_strips_outside_the_file_are_refused_without_wrapping():
    big = struct.pack("<Q", 2**64 - 8)
    for offset, count in ((2**32 - 1, 16), (8, 2**32 - 1)):
        entries = [(256, 3, 1, struct.pack("<H", 4)), (257, 3, 1, struct.pack("<H", 4)),
                   (273, 4, 1, struct.pack("<I", offset)), (279, 4, 1, struct.pack("<I", count))]
        with pytest.raises(ImageError, match="truncated"):
            image_header(_tiff(entries, b"\0" * 16))
    # BigTIFF: LONG8 offsets near 2**64 plus a count must not wrap around to a small end
    head = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16)
    entries = [(256, 3, 1, struct.pack("<Q", 4)), (257, 3, 1, struct.pack("<Q", 4)),
               (273, 16, 1, big), (279, 16, 1, struct.pack("<Q", 16))]
    body = struct.pack("<Q", len(entries)) + b"".join(
        struct.pack("<HHQ", t, k, c) + v for t, k, c, v in entries) + b"\0" * 8
    with pytest.raises(ImageError, match="truncated"):
        image_header(head + body + b"\0" * 16)


# --- 2: a per-photo failure is that photo's record

# (tests/internal/test_batch_internals.py: photos are read one by one)


# --- 3: files are not read whole before their first bytes are checked

def test_huge_sparse_files_are_refused_before_they_are_read(tmp_path):
    png = tmp_path / "huge.png"
    with open(png, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(1 << 40)                      # 1 TiB, sparse
    with pytest.raises(ImageError, match="more than an image of the"):
        _bounded(viz.read_image, png)
    other = tmp_path / "junk.jpg"
    with open(other, "wb") as f:
        f.write(b"not an image at all")
        f.truncate(8 << 30)                      # 8 GB, not an image
    with pytest.raises(ImageError, match="not an image format"):
        _bounded(viz.read_image, other)


def test_the_byte_cap_follows_the_pixel_limit(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((10, 10, 3), np.uint8))
    assert viz.max_file_bytes(100) == 800 + (64 << 20)
    with open(path, "ab") as f:                  # padding after IEND: the size counts
        f.truncate(viz.max_file_bytes(100) + 1)
    with pytest.raises(ImageError, match="max_pixels="):
        viz.read_image(path, max_pixels=100)


# --- 4: outputs are not inputs

def test_the_output_folder_is_excluded_from_discovery(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "jaxcam-out" / "deeper").mkdir(parents=True)
    for p in (tmp_path / "jaxcam-out" / "a_grad_cam_class1.png",
              tmp_path / "jaxcam-out" / "deeper" / "b.png"):
        cv2.imwrite(str(p), np.zeros((8, 8, 3), np.uint8))
    names = [p.name for p in batch.find_images([tmp_path], exclude=[tmp_path / "jaxcam-out"])]
    assert names == ["a"]
    assert len(batch.find_images([tmp_path])) == 3  # without exclude: all of them
    given = tmp_path / "jaxcam-out" / "deeper" / "b.png"  # a file named is still taken
    assert [p.name for p in batch.find_images([given], exclude=[tmp_path / "jaxcam-out"])] == ["b"]


# --- 5, 6, 10, 11: the output folder

OPTIONS = {"model": "resnet18", "methods": [["grad_cam", []]], "top": 1}


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    with batch.OutputFolder(tmp_path / "o", OPTIONS, resume=False):
        with pytest.raises(ValueError, match="in use by another jaxcam run"):
            with batch.OutputFolder(tmp_path / "o", OPTIONS, resume=True):
                pass
    with batch.OutputFolder(tmp_path / "o", OPTIONS, resume=True):   # released: free again
        pass


def test_distributed_processes_share_the_folder_but_not_a_shard(tmp_path):
    with batch.OutputFolder(tmp_path, OPTIONS, resume=False, process=0, processes=2), \
            batch.OutputFolder(tmp_path, OPTIONS, resume=False, process=1, processes=2):
        with pytest.raises(ValueError, match="in use"):
            batch.OutputFolder(tmp_path, OPTIONS, resume=False, process=1,
                               processes=2).__enter__()
        with pytest.raises(ValueError, match="in use"):        # a single run waits for both
            batch.OutputFolder(tmp_path, OPTIONS, resume=False).__enter__()


def test_resume_with_other_options_is_refused_naming_them(tmp_path):
    with batch.OutputFolder(tmp_path, OPTIONS, resume=False) as folder:
        writer = folder.results()
        writer.write({"path": "/a.png", "class": 1})
        writer.close()
    assert json.loads((tmp_path / "run.json").read_text())["options"] == OPTIONS
    other = dict(OPTIONS, methods=[["layer_cam", []]], top=2)
    with pytest.raises(ValueError, match=r"other options \(methods: .*grad_cam.* there, "
                                         r".*layer_cam.* now; top: 1 there, 2 now\)"):
        with batch.OutputFolder(tmp_path, other, resume=True):
            pass
    with batch.OutputFolder(tmp_path, OPTIONS, resume=True):     # the same: goes on
        pass
    with batch.OutputFolder(tmp_path, other, resume=False):      # a new run: recorded
        pass
    assert json.loads((tmp_path / "run.json").read_text())["options"] == other


def test_a_run_that_writes_nothing_leaves_nothing(tmp_path):
    with batch.OutputFolder(tmp_path / "new" / "o", OPTIONS, resume=False):
        assert (tmp_path / "new" / "o" / "run.json").exists()
    assert list(tmp_path.iterdir()) == []


def test_resume_keeps_one_record_per_photo(tmp_path):
    lines = [{"path": "/a.png", "class": 1}, {"path": "/b.png", "error": "corrupt"},
             {"path": "/gone.png", "error": "corrupt"}]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"path": "/c.pn')
    with batch.OutputFolder(tmp_path, OPTIONS, resume=True) as folder:
        assert folder.done() == {"/a.png"}
        writer = folder.results(retry=["/b.png", "/c.png"])
        writer.write({"path": "/b.png", "error": "corrupt"})   # fails again
        writer.write({"path": "/c.png", "class": 2})
        writer.close()
    kept = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["path"] for r in kept] == ["/a.png", "/gone.png", "/b.png", "/c.png"]


def test_an_unwritable_folder_is_refused_up_front(tmp_path):
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(ValueError, match="--out .*file.*cannot write there"):
        with batch.OutputFolder(tmp_path / "file", OPTIONS, resume=False):
            pass


# --- 7: integers in checkpoints

def _ckpt(tmp_path, body: bytes, fmt: str = "zip") -> Path:
    path = tmp_path / "ckpt.pt"
    path.write_bytes(checkpoint(fmt, dump(p_dict({"w": body})), {"0": (1, b"\0\0\x80\x3f")}))
    return path


def _digits_int(digits: int) -> bytes:
    return pickle.INT + b"9" * digits + b"\n"


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_a_5000_digit_count_is_a_checkpoint_error_naming_the_file(tmp_path, fmt):
    tensor = p_tensor(fmt, size=(1,), stride=(1,), numel=1)
    numel = pickle.BININT + struct.pack("<i", 1)
    assert numel in tensor
    for huge in (_digits_int(5000), pickle.LONG4 + struct.pack("<i", 2100) + b"\x7f" * 2100):
        path = _ckpt(tmp_path, tensor.replace(numel, huge, 1), fmt)
        with pytest.raises(CheckpointError, match=r"ckpt\.pt.*an integer of \d+ (characters|"
                                                  r"bytes).*below 2\*\*63") as info:
            _bounded(read_checkpoint, path)
        assert "4300" not in str(info.value)


def test_huge_sizes_reused_from_the_memo_are_refused_at_once(tmp_path):
    """One 32-dimensional size of 512-bit numbers, memoised, then referenced by 12,000
    tensor records (1.7 MB): every integer is bounded before any arithmetic."""
    size = pickle.MARK + (pickle.LONG1 + bytes([64]) + b"\xff" * 63 + b"\x7f") * 32 + \
        pickle.TUPLE + pickle.BINPUT + b"\x00"
    record = p_tensor("zip", size=(1,), stride=(1,), numel=1)
    one = pickle.MARK + pickle.BININT + struct.pack("<i", 1) + pickle.TUPLE
    assert record.count(one) == 2
    first = record.replace(one, size, 1)
    reuse = record.replace(one, pickle.BINGET + b"\x00", 1)
    items = b"".join(pickle.BINUNICODE + struct.pack("<I", 6) + f"w{i:05d}".encode()
                     + (first if i == 0 else reuse) for i in range(12000))
    main = pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + items + \
        pickle.SETITEMS + pickle.STOP
    path = tmp_path / "ckpt.pt"
    path.write_bytes(checkpoint("zip", main, {"0": (1, b"\0\0\x80\x3f")}))
    assert path.stat().st_size < 2 * MB
    with pytest.raises(CheckpointError, match="ckpt.pt.*malformed tensor record: size"):
        _bounded(read_checkpoint, path)


# --- 8: target arrays

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_target_arrays_are_refused(bad):
    seg = np.zeros((2, 4, 4, 3), np.float32)
    mask = np.ones((4, 4), np.float32)
    mask[1, 2] = bad
    with pytest.raises(ValueError, match=r"segmentation mask holds .* at index \(1, 2\)"):
        targets.segmentation(1, mask).prepare(seg)
    ref = np.ones(5, np.float32)
    ref[3] = bad
    with pytest.raises(ValueError, match="reference embedding holds"):
        targets.embedding_similarity(ref).prepare(np.zeros((2, 5), np.float32))
    det = {"boxes": np.zeros((2, 3, 4), np.float32), "scores": np.zeros((2, 3, 5), np.float32)}
    boxes = np.array([[0, 0, 2, bad]], np.float32)
    with pytest.raises(ValueError, match="reference boxes holds"):
        targets.box_score(boxes, [1]).prepare(det)
    with pytest.raises(ValueError, match="iou_threshold holds"):
        targets.box_score(np.array([[0, 0, 2, 2.0]]), [1], iou_threshold=bad).prepare(det)


# --- 9: convert never replaces its input

def test_convert_refuses_to_overwrite_its_checkpoint(tmp_path):
    from pretrained_ports.__main__ import main

    source = tmp_path / "r18.pth"
    source.write_bytes(b"original bytes")
    link = tmp_path / "link.pth"
    link.symlink_to(source)
    for output in (source, link, tmp_path / "." / "r18.pth"):
        assert main(["convert", "resnet18", str(source), "-o", str(output)]) == 2
        assert source.read_bytes() == b"original bytes"


# --- 12: the compilation cache, and a layer given twice: tests/internal/test_cli_internals.py

# --- end to end: the command line on a folder with its output inside

def _jaxcam(*args, cwd):
    return subprocess.run([sys.executable, "-m", "jaxcam.cli", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_explain_in_place_resumes_without_repeating_or_mixing_options(tmp_path):
    coffee = cv2.imread(str(Path(jaxcam.__file__).parent / "assets" / "coffee.png"))
    cv2.imwrite(str(tmp_path / "a.png"), cv2.resize(coffee, (64, 48)))
    cv2.imwrite(str(tmp_path / "b.jpg"), cv2.resize(coffee, (48, 64)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    base = ["explain", ".", "--model", "resnet18", "--weights", "random", "--batch-size", "2"]
    first = _jaxcam(*base, cwd=tmp_path)
    assert first.returncode == 1, first.stderr          # one photo skipped
    for _ in range(2):
        again = _jaxcam(*base, "--resume", cwd=tmp_path)
        assert again.returncode == 1 and "explained 0 photos" in again.stdout, again.stdout
    lines = (tmp_path / "jaxcam-out" / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(Path(r["path"]).name for r in records) == ["a.png", "b.jpg", "broken.png"]
    other = _jaxcam(*base, "--method", "layer_cam", "--top", "2", "--resume", cwd=tmp_path)
    assert other.returncode == 2
    assert "other options" in other.stderr and len(other.stderr.splitlines()) == 1
    twice = _jaxcam(*base, "--layer", "layer4,layer4", cwd=tmp_path)
    assert twice.returncode == 2 and "more than once" in twice.stderr


# --- fuzz: the header parser, in time and memory

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _seed_images() -> list[bytes]:
    image = np.random.default_rng(3).integers(0, 256, (12, 9, 3), np.uint8)
    exif = _exif([(274, 3, 1, struct.pack("<H", 6)), (256, 4, 3, struct.pack("<I", 60))]) \
        + b"\0" * 16
    seeds = [cv2.imencode(f".{ext}", image)[1].tobytes() for ext in ("png", "bmp", "tiff")]
    seeds.append(cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes())
    seeds += [_jpeg_with_exif(exif), _png_with_exif(exif), _directory_bomb(30, 50)]
    return seeds


SEEDS = _seed_images()
_EDIT = st.tuples(st.sampled_from(["set", "cut", "insert", "int"]), st.integers(0, 4000),
                  st.binary(min_size=1, max_size=8))


def _mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, at, value in edits:
        at %= max(len(out), 1)
        if kind == "set":
            out[at:at + len(value)] = value
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out[at:at] = value
        else:                                   # an extreme 4-byte integer (a count, an offset)
            out[at:at + 4] = struct.pack("<I", (0, 1, 2**16, 2**31, 2**32 - 1)[value[0] % 5])
    return bytes(out)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(0, len(SEEDS) - 1), edits=st.lists(_EDIT, max_size=6))
def test_fuzz_image_headers(seed, edits):
    """Any mutation of a PNG, JPEG (with EXIF), WebP, BMP or TIFF: a header or an
    ImageError, never another exception, within the time and memory budget."""
    data = _mutate(SEEDS[seed], edits)
    try:
        header = _bounded(image_header, data)
    except ImageError as e:
        assert len(str(e).splitlines()) == 1
    else:
        assert header.width > 0 and header.height > 0 and 1 <= header.orientation <= 8
