"""A run's inputs: the photos of files and folders, read and preprocessed one at a time
(a photo that cannot be read becomes an error, not a failed run), and the methods of
``--method`` text.

- :func:`find_images` walks files and folders (recursively) for PNG, JPEG, WebP, BMP and
  TIFF photos, in a stable order, each with a unique output name.
- :func:`parse_methods` reads ``grad_cam,grad_cam_pp:exact,score_cam:top_n=32``: a method,
  optionally with its derivatives (``:exact`` or ``:approx``) and any declared option.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxcam import viz
from jaxcam.derivatives._engines import DERIVATIVES
from jaxcam.methods._registry import available_methods, method_info

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


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


@dataclasses.dataclass
class Loaded:
    photo: Photo
    image: np.ndarray | None = None
    x: np.ndarray | None = None
    error: str | None = None


def load_photos(photos: Sequence[Photo], preprocess: Callable) -> list[Loaded]:
    """Reads and preprocesses photos; any failure of one photo (a hostile or broken file,
    an unexpected error of a decoder) becomes that photo's error, and the rest go on."""
    loaded = []
    for photo in photos:
        try:
            image = viz.read_image(photo.path)
            loaded.append(Loaded(photo, image, np.asarray(preprocess(image), np.float32)))
        except Exception as e:                     # noqa: BLE001 - one photo, not the run
            text = " ".join(str(e).split()) or type(e).__name__
            if not isinstance(e, (ValueError, OSError)):
                text = f"cannot read {str(photo.path)!r}: {type(e).__name__}: {text}"
            loaded.append(Loaded(photo, error=text))
    return loaded
