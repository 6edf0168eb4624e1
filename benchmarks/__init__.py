"""jaxcam's benchmarks: ``python -m benchmarks run`` (the suite, :mod:`benchmarks.suite`)
and the scripts ``python benchmarks/bench_*.py``."""
