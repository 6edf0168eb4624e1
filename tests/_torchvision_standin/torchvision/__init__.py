"""TEST-ONLY stand-in for ``torchvision``; NOT the real package and not part of jaxcam.

The real torchvision cannot be installed next to this project's torch build, but the
oracle package pytorch-grad-cam (``grad-cam`` on PyPI) imports a few torchvision names
at import time (``import torchvision``; ``from torchvision.transforms import Compose,
Normalize, ToTensor``; ``from torchvision.transforms.functional import resize``).
``tests/test_oracle_pytorch_grad_cam.py`` puts this directory on ``sys.path`` only when
``import torchvision`` fails, and removes it again afterwards. Every name here only
exists so that the import succeeds: calling any of them raises ``NotImplementedError``.
The Grad-CAM / Grad-CAM++ code paths the oracle test exercises use none of them.
"""

from . import ops, transforms

__version__ = "0.0.0+test-standin"
__all__ = ["ops", "transforms"]
