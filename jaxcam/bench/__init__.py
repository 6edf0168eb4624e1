"""The benchmark suite, installed with the package: ``jaxcam bench [options]``.

Every method jit-compiled, timed apart from its compilation, beside its floor (the plain
forward, the masked forwards, the closed form) and the peer libraries when they are
installed; see :mod:`jaxcam.bench.suite` for the document's schema.

    from jaxcam import bench
    document = bench.run([bench.Case("resnet18", "layer4", 224, "grad_cam", 8)])
    print(bench.markdown(document))
"""

from jaxcam.bench.suite import (ENVIRONMENT_KEYS, ROW_KEYS, SCHEMA_VERSION, SUITES, Case,
                                Peer, case_peers, environment, main, markdown, peers, run,
                                split_parts, validate)

__all__ = ["Case", "ENVIRONMENT_KEYS", "Peer", "ROW_KEYS", "SCHEMA_VERSION", "SUITES",
           "case_peers", "environment", "main", "markdown", "peers", "run", "split_parts",
           "validate"]
