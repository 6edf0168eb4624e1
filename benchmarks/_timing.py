"""Timing helpers shared by the benchmark scripts (wall clock, CPU or accelerator).

Every timed call ends with ``jax.block_until_ready``. The first call of a function
(trace + compile + run) is reported on its own as ``compile_s``; the steady state is the
median of ``repeats`` later calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time

import jax

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def time_call(fn, *args) -> float:
    """Seconds of one call ``fn(*args)``, up to ``jax.block_until_ready`` of its result."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def measure_many(calls: dict, *, repeats: int = 7, warmup: int = 1) -> dict:
    """Times several ``name -> (fn, args)`` calls, interleaving their repeats against drift.

    Per name: the first call is timed as ``compile_s``, ``warmup - 1`` more calls are run
    untimed, then round r of ``repeats`` calls each function once. Returns
    ``name -> dict(compile_s, median_s, times)``.
    """
    out = {name: {"compile_s": time_call(fn, *args)} for name, (fn, args) in calls.items()}
    for _ in range(max(warmup - 1, 0)):
        for fn, args in calls.values():
            time_call(fn, *args)
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            times[name].append(time_call(fn, *args))
    for name, ts in times.items():
        out[name].update(median_s=statistics.median(ts), times=ts)
    return out


def measure(fn, *args, repeats: int = 7, warmup: int = 1) -> dict:
    """``dict(compile_s, median_s, times)`` for ``fn(*args)``; see :func:`measure_many`."""
    return measure_many({"fn": (fn, args)}, repeats=repeats, warmup=warmup)["fn"]


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations inside the block: ``with count_compiles() as n: ...``,
    then ``n[0]``."""
    count = [0]

    def listener(name, _duration, **_kwargs):
        if name == _COMPILE_EVENT:
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def machine() -> str:
    """One line: CPU model, core count, jax version, device kind and platform."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    return (f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__}, "
            f"{dev.device_kind} ({dev.platform})")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def emit(results: dict, path: str | None = None) -> None:
    """Prints ``results``: scalar entries as ``key: value`` lines, each dict of dicts as a
    table (one row per inner dict, list values left out); writes JSON to ``path`` if given."""
    for key, value in results.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict)
                                                     for v in value.values()):
            cols = [c for c in dict.fromkeys(k for row in value.values() for k in row)
                    if not any(isinstance(row.get(c), list) for row in value.values())]
            rows = [[name] + [_fmt(row.get(c, "")) for c in cols] for name, row in value.items()]
            header = [key] + cols
            widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
            print()
            for r in [header] + rows:
                print("  ".join(s.ljust(w) if i == 0 else s.rjust(w)
                                for i, (s, w) in enumerate(zip(r, widths))))
            print()
        else:
            print(f"{key}: {_fmt(value)}")
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {path}")
