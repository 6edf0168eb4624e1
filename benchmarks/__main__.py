"""``python -m benchmarks run [options]``: the suite of :mod:`jaxcam.bench` from a clone
(the same as ``jaxcam bench [options]``), with pytorch-grad-cam importable over the test
stand-in of torchvision where the real one cannot be loaded."""

import sys

from benchmarks._standin import torchvision_standin
from jaxcam.bench import main

if sys.argv[1:2] != ["run"]:
    sys.exit("usage: python -m benchmarks run [options]  (python -m benchmarks run --help)")
with torchvision_standin():
    sys.exit(main(sys.argv[2:], prog="python -m benchmarks run"))
