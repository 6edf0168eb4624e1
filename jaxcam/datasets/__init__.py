"""Datasets with ground truth for scoring maps: :mod:`jaxcam.datasets.shapes`."""

from jaxcam.datasets import shapes as shapes

__all__ = ["shapes"]
