"""The benchmark suite, installed with the package: ``jaxcam bench [options]``.

Every method jit-compiled, timed apart from its compilation, beside its floor (the plain
forward, the masked forwards, the closed form) and the peer libraries when they are
installed; see :mod:`jaxcam.bench.suite` for the document's schema, :mod:`.cases` for
the suites and the peers, :mod:`.parts` for the full suite in parts.

    from jaxcam import bench
    document = bench.run([bench.Case("resnet18", "layer4", 224, "grad_cam", 8)])
    print(bench.markdown(document))
"""

from jaxcam.bench.cases import SUITES, Case, Peer, case_peers, peer_kwargs, peers
from jaxcam.bench.command import main
from jaxcam.bench.parts import add_part, split_parts, write_results
from jaxcam.bench.suite import (ENVIRONMENT_KEYS, ROW_KEYS, SCHEMA_VERSION, Setup, agreement,
                                environment, jaxcam_call, markdown, peer_call, run, validate)

__all__ = ["Case", "ENVIRONMENT_KEYS", "Peer", "ROW_KEYS", "SCHEMA_VERSION", "SUITES",
           "Setup", "add_part", "agreement", "case_peers", "environment", "jaxcam_call",
           "main", "markdown", "peer_call", "peer_kwargs", "peers", "run", "split_parts",
           "validate", "write_results"]
