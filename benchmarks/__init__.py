"""jaxcam's benchmarks from a clone: ``python -m benchmarks run`` (the suite, whose engine is
:mod:`jaxcam.bench`, installed with the package as ``jaxcam bench``), the scripts
``python benchmarks/bench_*.py`` and ``RESULTS.md``."""
