"""The benchmark suite, installed with the package: ``jaxcam bench [options]``.

Every method jit-compiled, timed apart from its compilation, beside its floor (the plain
forward, the masked forwards, the closed form) and the peer libraries when they are
installed; see :mod:`jaxcam.bench.suite` for the document's schema.

    from jaxcam import bench
    document = bench.run([bench.Case("resnet18", "layer4", 224, "grad_cam", 8)])
    print(bench.markdown(document))
"""

from jaxcam.bench.suite import (ENVIRONMENT_KEYS, ROW_KEYS, SCHEMA_VERSION, SUITES, Case,
                                environment, main, markdown, run, validate)

__all__ = ["Case", "ENVIRONMENT_KEYS", "ROW_KEYS", "SCHEMA_VERSION", "SUITES", "environment",
           "main", "markdown", "run", "validate"]
