"""A run's output folder: its results (JSON lines, one per photo, one file per process),
its manifest of options (a resumed run must use the same) and its lock."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from jaxcam import viz
from pretrained_ports._atomic import remove_temporaries

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
