"""The registry's vocabulary (jaxcam/methods/_registry.py): one name per idea."""

from __future__ import annotations

import jaxcam

NAMES = jaxcam.available_methods()


def test_every_built_in_option_is_in_the_vocabulary():
    """One name per idea: a built-in method's option is one of the vocabulary's, and a
    chunked method names the axes its chunk_size bounds."""
    from jaxcam.methods._registry import CHUNK_AXES, OPTION_HELP

    for name in NAMES:
        info = jaxcam.method_info(name)
        assert {o.name for o in info.options} <= set(OPTION_HELP), name
        assert set(info.chunks) <= set(CHUNK_AXES)
        assert bool(info.chunks) == any(o.name == "chunk_size" for o in info.options)
