"""TEST-ONLY stand-in for ``torchvision.transforms`` (see ``torchvision/__init__.py``)."""

from .._unavailable import unavailable
from . import functional

Compose = unavailable("transforms.Compose")
Normalize = unavailable("transforms.Normalize")
ToTensor = unavailable("transforms.ToTensor")
