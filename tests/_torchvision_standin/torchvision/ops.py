"""TEST-ONLY stand-in for ``torchvision.ops`` (see ``torchvision/__init__.py``)."""

from ._unavailable import unavailable

box_iou = unavailable("ops.box_iou")
