"""Reading photos and drawing CAMs onto them (OpenCV and NumPy, outside jit).

Reading (``_read``, its headers checked first by ``_headers``), the models' preprocessing
(``_preprocess``: :class:`jaxcam.Preprocess`), drawing (``_overlay``) and writing
(``_write``).

A map computed on the model's centre crop is drawn back onto the ORIGINAL photo: the
resize and the crop of the model's :class:`jaxcam.Preprocess` are undone exactly (an
affine map from map pixels to photo pixels); the part of the photo the model never saw
is left as it is.
"""

from jaxcam.viz._headers import FORMATS as FORMATS
from jaxcam.viz._headers import ImageError as ImageError
from jaxcam.viz._headers import ImageHeader as ImageHeader
from jaxcam.viz._headers import image_header as image_header
from jaxcam.viz._overlay import COLORMAPS as COLORMAPS
from jaxcam.viz._overlay import grid as grid
from jaxcam.viz._overlay import heatmap as heatmap
from jaxcam.viz._overlay import overlay as overlay
from jaxcam.viz._overlay import to_original as to_original
from jaxcam.viz._read import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from jaxcam.viz._read import max_file_bytes as max_file_bytes
from jaxcam.viz._read import read_image as read_image
from jaxcam.viz._write import encode_png as encode_png
from jaxcam.viz._write import write_all as write_all
from jaxcam.viz._write import write_png as write_png
from jaxcam.viz._write import write_text as write_text

__all__ = ["COLORMAPS", "DEFAULT_MAX_PIXELS", "FORMATS", "ImageError", "ImageHeader",
           "encode_png", "grid", "heatmap", "image_header", "max_file_bytes", "overlay",
           "read_image", "to_original", "write_all", "write_png", "write_text"]
