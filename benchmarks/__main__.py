"""``python -m benchmarks run [options]``: the suite of :mod:`jaxcam.bench` from a clone
(the same as ``jaxcam bench [options]``), with pytorch-grad-cam importable over the test
stand-in of torchvision where the real one cannot be loaded.

``python -m benchmarks curves --axis AXIS``: one cost curve (:mod:`benchmarks.curves`).

``python -m benchmarks memory``: peak memory at batch 32 against the peers, a fresh process
per case (:mod:`benchmarks.memory`)."""

import sys

USAGE = ("usage: python -m benchmarks run [options]  |  python -m benchmarks curves --axis "
         "batch|samples|masks|depth|engine  |  python -m benchmarks memory [options]  "
         "(--help after any)")

if sys.argv[1:2] == ["curves"]:
    from benchmarks.curves import main as curves

    sys.exit(curves(sys.argv[2:]))
if sys.argv[1:2] == ["memory"]:
    from benchmarks.memory import main as memory

    sys.exit(memory(sys.argv[2:]))
if sys.argv[1:2] != ["run"]:
    sys.exit(USAGE)

from benchmarks._standin import torchvision_standin  # noqa: E402
from jaxcam.bench import main  # noqa: E402

with torchvision_standin():
    sys.exit(main(sys.argv[2:], prog="python -m benchmarks run"))
