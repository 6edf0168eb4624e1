"""Explaining many photos: one compiled program per run, batches split over the devices.

- :func:`find_images` walks files and folders (recursively) for PNG, JPEG, WebP, BMP and
  TIFF photos, in a stable order, each with a unique output name.
- :func:`parse_methods` reads ``grad_cam,grad_cam_pp:exact,score_cam:top_n=32``: a method,
  optionally with its derivatives (``:exact`` or ``:approx``) and any declared option.
- :func:`explain_step` is the compiled program: the class probabilities, the targets (the
  given class, or each image's top K) and every (layer, method, target) map of a batch,
  in one ``jit``. Its shapes are fixed, so a run compiles once: the last, partial batch is
  padded to the batch size.
- :func:`explain_photos` streams photos through it: a background thread decodes and
  preprocesses the next batches while the devices compute, another writes the overlays
  (on the ORIGINAL photo) and raw maps of the previous one, so memory is bounded by a few
  batches whatever the folder size. It yields one record per photo, in order; a photo
  that cannot be read yields an error record and the run goes on.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam import viz
from jaxcam.derivatives._engines import DERIVATIVES
from jaxcam._devices import padded_size, shard_batch
from jaxcam.methods._registry import available_methods, method_info
from jaxcam._weighting import normalize
from pretrained_ports._atomic import remove_temporaries

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


# --- inputs

@dataclasses.dataclass(frozen=True)
class Photo:
    """A photo to explain: its path, and its output name (relative, without suffix)."""

    path: Path
    name: str


def find_images(paths: Sequence[str | os.PathLike], *,
                exclude: Sequence[str | os.PathLike] = ()) -> list[Photo]:
    """The photos under ``paths``: files as given, folders walked recursively for the
    suffixes in :data:`IMAGE_SUFFIXES` (any case), sorted. A photo found twice is kept
    once. Output names keep a folder's sub-folders (``sub/cat``); names that would
    collide get the suffix (``cat_jpg``).

    Args:
      paths: files and folders.
      exclude: folders a walk skips, e.g. the run's output folder when it lies inside an
        input folder (its overlays are not photos to explain). Files given by name are
        kept.

    Raises:
      ValueError: a path does not exist, or no photo was found.
    """
    skipped = [Path(e).resolve() for e in exclude]

    def wanted(f: Path) -> bool:
        if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
            return False
        where = f.resolve().parent
        return not any(where == e or e in where.parents for e in skipped)

    found: dict[Path, Photo] = {}
    for given in paths:
        root = Path(given)
        if root.is_dir():
            files = sorted(f for f in root.rglob("*") if wanted(f))
            entries = [(f, f.relative_to(root).with_suffix("").as_posix()) for f in files]
        elif root.is_file():
            entries = [(root, root.stem)]
        else:
            raise ValueError(f"{given}: no such file or folder")
        for path, name in entries:
            found.setdefault(path.resolve(), Photo(path, name))
    if not found:
        raise ValueError(f"no photos ({', '.join(s[1:] for s in IMAGE_SUFFIXES)}) found in "
                         f"{', '.join(map(str, paths))}")
    photos, taken = [], set()
    for photo in found.values():
        name = photo.name
        if name in taken:
            name = f"{name}_{photo.path.suffix[1:].lower()}"
        base, i = name, 2
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        photos.append(Photo(photo.path, name))
    return photos


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered method with fixed options (hashable: part of the compiled program).

    Attributes:
      name: the registered name.
      options: sorted ``(option, value)`` pairs, e.g. ``(("derivatives", "exact"),)``.
      label: how outputs name it: ``grad_cam_pp`` or ``grad_cam_pp-exact``.
    """

    name: str
    options: tuple = ()
    label: str = ""


def _accepts(name: str, option: str) -> bool:
    return any(o.name == option for o in method_info(name).options)


def _method_option(name: str, item: str, part: str) -> tuple[str, object]:
    """``(option, value)`` of one ``:part`` of a method item: ``exact`` / ``approx`` (the
    derivatives), or ``option=value`` of a declared option."""
    if "=" not in part:
        if part not in DERIVATIVES:
            raise ValueError(f"{item!r}: {part!r} is neither the derivatives ('exact' or "
                             "'approx') nor option=value")
        if not _accepts(name, "derivatives"):
            raise ValueError(f"{item!r}: {name} has no higher-order derivatives to choose "
                             "(':exact' / ':approx' apply to grad_cam_pp and "
                             "smooth_grad_cam_pp)")
        return "derivatives", part
    option, _, text = part.partition("=")
    info = method_info(name)
    try:
        return option, info.option(option).parse(text)
    except ValueError as e:
        raise ValueError(f"{item!r}: {e} (see `jaxcam methods {name}`)") from None


def parse_methods(text: str, *, link: str | None = None,
                  derivatives: str | None = None) -> tuple[MethodSpec, ...]:
    """Methods from ``"grad_cam,grad_cam_pp:exact,score_cam:top_n=32:chunk_size=8"``: each
    a registered name, optionally followed by ``:exact`` / ``:approx`` (its derivatives)
    and ``:option=value`` of its declared options (numbers, flags, words; ``None``).
    ``link`` and ``derivatives`` apply to every method that takes them, unless the item
    sets them.

    Raises:
      ValueError: an unknown method (naming close matches), an option the method does
        not take, or a value of the wrong type.
    """
    specs = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        name, *parts = item.split(":")
        if name not in available_methods():
            close = difflib.get_close_matches(name, available_methods(), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ValueError(f"unknown method {name!r}: {hint}see `jaxcam methods` for all "
                             f"{len(available_methods())}")
        given = dict(_method_option(name, item, part) for part in parts)
        options = {}
        if link is not None and _accepts(name, "link"):
            options["link"] = link
        if derivatives is not None and _accepts(name, "derivatives"):
            options["derivatives"] = derivatives
        options.update(given)
        label = "-".join([name, *parts])
        specs.append(MethodSpec(name, tuple(sorted(options.items())), label))
    if not specs:
        raise ValueError("no method given: e.g. --method grad_cam,grad_cam_pp")
    labels = [s.label for s in specs]
    if len(set(labels)) < len(labels):
        raise ValueError(f"a method is given twice: {', '.join(labels)}")
    return tuple(specs)


# --- the compiled program

def _map(spec: MethodSpec, split, x, classes, key):
    info = method_info(spec.name)
    options = dict(spec.options)
    if "key" in info.needs:
        options["key"] = key
    maps = info.function(split, x, classes, **options)
    if info.returns == "input_gradients":            # an image of gradients: its magnitude
        maps = normalize(jnp.abs(maps).sum(-1))
    return maps.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("specs", "top"))
def explain_step(splits: tuple, x, classes, key, *, specs: tuple[MethodSpec, ...],
                 top: int = 1):
    """One batch: ``(probabilities (B, C), targets (B, T), maps (B, L, M, T, H, W))``.

    Args:
      splits: the network split at each of L layers (the same variables).
      x: preprocessed images (B, H, W, C).
      classes: (B,) target classes, or None: each image's ``top`` most probable classes.
      key: the ``jax.random`` key of the methods that draw noise.
      specs: the M methods.
    """
    logits = splits[0].logits(x)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    targets = jax.lax.top_k(probs, top)[1] if classes is None else classes[:, None]
    maps = [[[_map(spec, split, x, targets[:, t], key) for t in range(targets.shape[1])]
             for spec in specs] for split in splits]
    return probs, targets, jnp.stack([jnp.stack([jnp.stack(m, 1) for m in row], 1)
                                      for row in maps], 1)


def num_classes(split, size: tuple[int, int, int]) -> int:
    """The number of classes of ``split``'s logits for one image of ``size`` (H, W, C)."""
    out = jax.eval_shape(split.logits, jax.ShapeDtypeStruct((1, *size), jnp.float32))
    if not hasattr(out, "shape") or len(out.shape) != 2:
        raise ValueError("the command line explains class logits (B, C); this head returns "
                         f"{jax.tree_util.tree_map(lambda v: v.shape, out)}")
    return int(out.shape[-1])


# --- the stream

@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What :func:`explain_photos` computes and writes.

    Attributes:
      model: the model's name, for the records.
      splits: the network split at each layer (variables placed on ``mesh``).
      specs: the methods.
      classes: the class to explain in every image, or None for each image's top ``top``.
      top: how many of each image's most probable classes to explain (classes None).
      seed: the seed of the methods that draw noise.
      batch_size: images per compiled call (rounded up to a multiple of the devices).
      mesh: the devices a batch is split over (:func:`jaxcam.data_mesh`), or None.
      out: the output folder.
      formats: which files to write per map: ``("png",)``, ``("npy",)`` or both.
      class_names: names of the classes by index (used when the model has as many
        classes), or None.
    """

    model: str
    splits: tuple
    specs: tuple[MethodSpec, ...]
    classes: int | None = None
    top: int = 1
    seed: int = 0
    batch_size: int = 8
    mesh: object = None
    out: Path = Path("jaxcam-out")
    formats: tuple[str, ...] = ("png",)
    class_names: tuple[str, ...] | None = None


@dataclasses.dataclass
class _Loaded:
    photo: Photo
    image: np.ndarray | None = None
    x: np.ndarray | None = None
    error: str | None = None


def _load(photos: Sequence[Photo], preprocess: Callable) -> list[_Loaded]:
    """Reads and preprocesses photos; any failure of one photo (a hostile or broken file,
    an unexpected error of a decoder) becomes that photo's error, and the rest go on."""
    loaded = []
    for photo in photos:
        try:
            image = viz.read_image(photo.path)
            loaded.append(_Loaded(photo, image, np.asarray(preprocess(image), np.float32)))
        except Exception as e:                     # noqa: BLE001 - one photo, not the run
            text = " ".join(str(e).split()) or type(e).__name__
            if not isinstance(e, (ValueError, OSError)):
                text = f"cannot read {str(photo.path)!r}: {type(e).__name__}: {text}"
            loaded.append(_Loaded(photo, error=text))
    return loaded


def _name(config: RunConfig, c: int, n: int) -> str:
    names = config.class_names
    return names[c] if names is not None and len(names) == n else ""


def _npy(m: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, m, allow_pickle=False)
    return buffer.getvalue()


def _write(config: RunConfig, items: list[_Loaded], probs, targets, maps, t0: float
           ) -> list[dict]:
    """Writes every map of the batch's photos and returns their records."""
    layers = [s.layer for s in config.splits]
    preprocess = config.splits[0].preprocess
    records = []
    for b, item in enumerate(items):
        files, entries = {}, []
        for li, layer in enumerate(layers):
            for mi, spec in enumerate(config.specs):
                for t, c in enumerate(targets[b]):
                    stem = "_".join([item.photo.name] + ([layer] if len(layers) > 1 else [])
                                    + [spec.label, f"class{int(c)}"])
                    entry = {"layer": layer, "method": spec.label, "class": int(c)}
                    m = maps[b, li, mi, t]
                    if "png" in config.formats:
                        path = config.out / f"{stem}.png"
                        files[path] = viz.overlay(item.image, m, preprocess=preprocess)
                        entry["png"] = str(path.resolve())
                    if "npy" in config.formats:
                        path = config.out / f"{stem}.npy"
                        files[path] = _npy(m)
                        entry["npy"] = str(path.resolve())
                    entries.append(entry)
        viz.write_all(files)                          # a photo's files: all or none
        p = probs[b]
        top5 = np.argsort(-p, kind="stable")[:5]
        chosen = [int(c) for c in targets[b]]
        records.append({
            "path": str(item.photo.path.resolve()),
            "model": config.model,
            "layer": ",".join(layers),
            "method": ",".join(s.label for s in config.specs),
            "class": chosen[0], "name": _name(config, chosen[0], p.size),
            "probability": float(p[chosen[0]]),
            "targets": [{"class": c, "name": _name(config, c, p.size), "probability": float(p[c])}
                        for c in chosen],
            "top5": [{"class": int(c), "name": _name(config, int(c), p.size),
                      "probability": float(p[c])} for c in top5],
            "maps": entries,
        })
    seconds = (time.perf_counter() - t0) / max(len(items), 1)
    for record in records:
        record["seconds"] = round(seconds, 6)
    return records


def explain_photos(photos: Sequence[Photo], config: RunConfig) -> Iterator[dict]:
    """Explains ``photos`` in batches; yields one record per photo, in order: the JSONL
    line of a photo explained (its files written), or ``{"path", "error"}``."""
    size = padded_size(min(config.batch_size, max(len(photos), 1)), config.mesh)
    chunks = [photos[i:i + size] for i in range(0, len(photos), size)]
    preprocess = config.splits[0].preprocess
    key = jax.random.key(config.seed)
    given = None if config.classes is None else np.full(size, config.classes, np.int32)
    with ThreadPoolExecutor(1, "jaxcam-read") as reader, \
            ThreadPoolExecutor(1, "jaxcam-write") as writer:
        ahead = [reader.submit(_load, chunk, preprocess) for chunk in chunks[:2]]
        pending: Future | None = None
        for i in range(len(chunks)):
            loaded = ahead.pop(0).result()
            if i + 2 < len(chunks):
                ahead.append(reader.submit(_load, chunks[i + 2], preprocess))
            t0 = time.perf_counter()
            good = [item for item in loaded if item.error is None]
            arrays = (None, None, None)
            if good:
                x = np.stack([item.x for item in good])
                x = np.concatenate([x, np.repeat(x[:1], size - len(good), 0)])  # pad
                if config.mesh is not None:
                    x = shard_batch(x, config.mesh)
                arrays = explain_step(config.splits, x, given, key, specs=config.specs,
                                      top=config.top)         # dispatched, not awaited
            if pending is not None:                   # the previous batch, written
                yield from pending.result()
            if good:
                arrays = tuple(np.asarray(r)[:len(good)] for r in arrays)
            pending = writer.submit(_batch_records, config, loaded, good, *arrays, t0)
        if pending is not None:
            yield from pending.result()


def _batch_records(config, loaded, good, probs, targets, maps, t0) -> list[dict]:
    written = iter(_write(config, good, probs, targets, maps, t0) if good else [])
    return [{"path": str(item.photo.path.resolve()), "error": item.error}
            if item.error is not None else next(written) for item in loaded]


# --- results.jsonl

def results_name(process: int = 0, processes: int = 1) -> str:
    """``results.jsonl``, or each process's shard ``results-00001-of-00002.jsonl``."""
    return ("results.jsonl" if processes == 1
            else f"results-{process:05d}-of-{processes:05d}.jsonl")


def done_paths(out: Path) -> set[str]:
    """The paths explained in ``out``'s results files (every shard; error records and a
    line cut short by a killed run do not count)."""
    return {record["path"] for record in read_results(out) if "error" not in record}


def read_results(out: Path) -> list[dict]:
    """Every whole record of ``out``'s results files (every shard), in file order."""
    return [record for path in sorted(Path(out).glob("results*.jsonl"))
            for record in _records(path)]


class JsonLines:
    """Appends records to a JSONL file, one flushed line each; the file is created at the
    first record, so a run that explains nothing leaves no file behind."""

    def __init__(self, path: Path, *, append: bool):
        self.path, self.append, self.file = Path(path), append, None

    def write(self, record: dict) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut = (self.append and self.path.exists() and self.path.stat().st_size > 0
                   and not self.path.read_bytes().endswith(b"\n"))
            self.file = open(self.path, "a" if self.append else "w", encoding="utf-8")
            if cut:                                   # a line cut short by a killed run
                self.file.write("\n")
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# --- the output folder

MANIFEST = "run.json"
_LOCK = ".jaxcam.lock"


def _records(path: Path) -> Iterator[dict]:
    """The whole records of a JSONL file (a line cut short by a killed run is skipped)."""
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            yield record


class OutputFolder:
    """An output folder held by one run, for as long as the ``with`` block lasts.

    Entering it:

    - creates the folder and checks that it is writable (before any model is loaded);
    - takes an exclusive lock (``OUT/.jaxcam.lock``; each process of a distributed run
      holds it shared and its own results shard exclusively), so that a second run on
      the same folder is refused instead of overwriting the first one's results;
    - compares the run's ``options`` with those recorded in ``OUT/run.json``: a resume
      whose options differ (another method, model, weights, layer, class...) is refused,
      naming each difference; any other run records its options there;
    - removes the temporaries a killed run left (single-process runs, which hold the lock
      exclusively);
    - on resume, rewrites this process's results file with one record per photo: the
      error records of the photos about to be retried go (their new outcome replaces them).

    Args:
      out: the output folder.
      options: the run's options (JSON-serialisable), recorded and compared on resume.
      resume: go on with the photos not yet in the results.
      retry: the paths this run is about to explain (their old error records go).
      process, processes: this process's index and the number of processes.

    Raises:
      ValueError: the folder is not writable, in use by another run, or (on resume) holds
        the results of a run with other options.
    """

    def __init__(self, out: str | os.PathLike, options: dict, *, resume: bool,
                 process: int = 0, processes: int = 1):
        self.out, self.options, self.resume = Path(out), json.loads(json.dumps(options)), resume
        self.process, self.processes = process, processes
        self.results_path = self.out / results_name(process, processes)
        self._files: list = []
        self._made: list[Path] = []       # what this run created, removed if it writes nothing

    def __enter__(self) -> OutputFolder:
        try:
            missing = self.out
            while not missing.exists() and missing != missing.parent:
                self._made.append(missing)
                missing = missing.parent
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".jaxcam-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ValueError(f"--out {self.out}: cannot write there ({e.strerror or e}); "
                             "choose a writable folder") from None
        try:
            single = self.processes == 1
            self._lock(self.out / _LOCK, exclusive=single)
            if not single:
                self._lock(self.out / f".{self.results_path.name}.lock", exclusive=True)
            self._check_options()
            if single:
                remove_temporaries(self.out)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases the lock. A run that wrote no results leaves nothing behind: its
        options file and the folders it created go again."""
        if not self._files:
            return
        single = self.processes == 1
        if not self.results_path.exists() and (self.out / MANIFEST) in self._made:
            (self.out / MANIFEST).unlink(missing_ok=True)
        if single:                                  # held exclusively: nobody else uses it
            (self.out / _LOCK).unlink(missing_ok=True)
        for f in self._files:
            f.close()                               # closing releases the lock
        self._files = []
        for folder in self._made:
            if folder.is_dir():
                try:
                    folder.rmdir()                  # only if empty
                except OSError:
                    break

    def _lock(self, path: Path, *, exclusive: bool) -> None:
        import fcntl

        while True:
            f = open(path, "a+b")
            try:
                fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise ValueError(f"--out {self.out} is in use by another jaxcam run; wait "
                                 "for it to finish or choose another --out") from None
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(f.fileno()).st_ino:
                break
            f.close()            # its holder removed the file meanwhile: lock the new one
        self._files.append(f)

    def _check_options(self) -> None:
        manifest = self.out / MANIFEST
        recorded = None
        if manifest.is_file():
            try:
                recorded = json.loads(manifest.read_text()).get("options")
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
                recorded = None
        if self.resume and isinstance(recorded, dict) and recorded != self.options:
            keys = sorted(set(recorded) | set(self.options), key=str)
            diff = [f"{k}: {json.dumps(recorded.get(k))} there, {json.dumps(self.options.get(k))} "
                    "now" for k in keys if recorded.get(k) != self.options.get(k)]
            raise ValueError(f"--resume: {self.out} holds the results of a run with other "
                             f"options ({'; '.join(diff)}); rerun with the same options, or "
                             "choose another --out")
        if recorded != self.options:
            if not manifest.exists():
                self._made.insert(0, manifest)
            viz.write_text(manifest, json.dumps({"options": self.options}, indent=2) + "\n")

    def done(self) -> set[str]:
        """The paths already explained in this folder (every shard), on resume; else none."""
        return done_paths(self.out) if self.resume else set()

    def results(self, retry: Sequence[str | os.PathLike] = ()) -> JsonLines:
        """This process's results file, for appending (resume) or writing anew. On resume
        the file is first rewritten without the error records of ``retry`` (and without a
        line cut short), so each photo keeps one record."""
        if self.resume and self.results_path.is_file():
            again = {str(Path(p).resolve()) for p in retry}
            kept = [r for r in _records(self.results_path)
                    if not ("error" in r and r["path"] in again)]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            if text.encode() != self.results_path.read_bytes():
                viz.write_text(self.results_path, text)
        return JsonLines(self.results_path, append=self.resume)
