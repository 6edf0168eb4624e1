"""Writes that land whole or not at all.

Writes go to a temporary file beside the target and are renamed into place, so a reader
(or a crash) never sees a half-written file. The temporary is created with mode 0o666,
which the process umask then restricts exactly as for ``open(path, "w")``: the files get
the user's normal permissions, not the 0600 of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

# --- writing ---------------------------------------------------------------------------

def _temporary_beside(path: Path) -> tuple[int, Path]:
    """Creates a new empty file beside ``path``: (open descriptor, its path).

    Mode 0o666 lets the umask decide the permissions (``os.umask`` itself is process-global
    and cannot be read without being changed); O_EXCL never reuses an existing file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _write_temporary(path: Path, data: bytes) -> Path:
    """Writes ``data`` to a new temporary file beside ``path``, flushed to disk. An error
    names ``path``, the file the caller asked for, not the temporary."""
    try:
        fd, tmp = _temporary_beside(path)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the rename must never publish an empty file after a crash
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _naming(e, path) from None
        raise
    return tmp


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` as the same OSError subclass, its message naming ``path``."""
    return type(error)(error.errno, f"cannot write {path}: {error.strerror or error}")


# A temporary or backup of the writers below: ``.NAME.<12 hex digits>.tmp`` / ``.old``.
_LEFTOVER = re.compile(r"^\..+\.[0-9a-f]{12}\.(tmp|old)$")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Removes the temporaries and backups that writes into ``folder`` (and its
    sub-folders) left when their process was killed between writing and renaming; call it
    only while no other process writes there. Returns the files removed."""
    removed = []
    for path in Path(folder).rglob(".*"):
        if _LEFTOVER.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _make_parents(path: Path) -> list[Path]:
    """Creates the missing folders above ``path``; returns those it created, deepest first."""
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


def atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically: a temporary file beside it, renamed into
    place, so a reader (or a crash) never sees a half-written file.

    The file gets the permissions ``open(path, "w")`` would give (0o666 less the umask).
    """
    return atomic_write_all({path: data})[0]


def atomic_write_all(files: Mapping[str | os.PathLike, bytes]) -> list[Path]:
    """Writes several files all or none: every target is written, or none is changed.

    Each file is first written to a temporary beside its target; only when all are
    written are they renamed into place. If anything fails (a full disk, a folder in the
    way of a target), the temporaries are removed, targets already renamed are put back
    as they were (restored from a hard link to the old file, or removed if new), and the
    folders this call created are removed again.

    Args:
      files: target path -> bytes.

    Returns:
      The target paths, in the order given.
    """
    targets = [Path(p) for p in files]
    if len(set(targets)) != len(targets):
        raise ValueError(f"the same file is named twice among {[str(p) for p in targets]}")
    made_dirs: list[Path] = []
    temporaries: dict[Path, Path] = {}
    backups: dict[Path, Path | None] = {}  # target -> hard link to its old version, or None
    try:
        for target, data in zip(targets, files.values()):
            try:
                made_dirs += _make_parents(target)
            except OSError as e:    # a file in the way of a folder: name the target
                raise _naming(e, target) from None
            temporaries[target] = _write_temporary(target, data)
        for target, tmp in temporaries.items():
            backups[target] = _backup(target)
            try:
                os.replace(tmp, target)
            except OSError as e:  # e.g. a folder in the way: name the target, not the temporary
                raise _naming(e, target) from None
        for backup in backups.values():
            if backup is not None:
                backup.unlink(missing_ok=True)
        return targets
    except BaseException:
        for target, backup in backups.items():
            if temporaries[target].exists():  # not renamed yet
                if backup is not None:
                    backup.unlink(missing_ok=True)
            elif backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        for folder in sorted(set(made_dirs), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:  # not empty: someone else wrote there meanwhile
                pass
        raise


def _backup(target: Path) -> Path | None:
    """A hard link to ``target``'s current file (None if there is none), so that a failed
    all-or-none write can put it back."""
    if not os.path.lexists(target) or target.is_dir():  # a folder: the rename will fail
        return None
    for _ in range(100):
        backup = target.with_name(f".{target.name}.{secrets.token_hex(6)}.old")
        try:
            os.link(target, backup, follow_symlinks=False)  # a link stays a link
            return backup
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a backup link beside {target}")
