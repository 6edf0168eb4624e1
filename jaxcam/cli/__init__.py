"""The jaxcam command line: ``jaxcam --help`` (or ``python -m jaxcam.cli``) lists the
commands (:data:`jaxcam.cli._parser.USAGE`).

The commands on photos are in ``_photos``, those about the package in ``_tools``, what
they share in ``_common`` and the parser in ``_parser``.
"""

from jaxcam.cli._parser import build_parser as build_parser
from jaxcam.cli._parser import main as main

__all__ = ["build_parser", "main"]
