"""TEST-ONLY stand-in helper (see ``torchvision/__init__.py``): placeholders that refuse use."""


def unavailable(name: str):
    """A callable (also usable as a class) that raises when used."""

    class _Unavailable:
        def __init__(self, *args, **kwargs):
            raise NotImplementedError(
                f"torchvision.{name} is a test-only stand-in (tests/_torchvision_standin); "
                "the real torchvision is not installed")

    _Unavailable.__name__ = _Unavailable.__qualname__ = name.rpartition(".")[2]
    return _Unavailable
