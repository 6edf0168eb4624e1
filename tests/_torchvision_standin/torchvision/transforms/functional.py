"""TEST-ONLY stand-in for ``torchvision.transforms.functional`` (see ``torchvision/__init__.py``)."""

from .._unavailable import unavailable

resize = unavailable("transforms.functional.resize")
