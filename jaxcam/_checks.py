"""Checks of the options every public function shares: a choice among names, a positive
integer, a finite non-negative number.

Static options (names, counts, chunk sizes) fix the compiled program, so they are Python
values, checked once here, never traced. Numeric options (``eps``, ``noise``, baselines)
are traced: a concrete value is checked here, a traced one (under a caller's jit) passes
through with its shape checked. Each error names the argument, what was expected and what
came.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
    """Whether ``value`` has a value now (not a tracer inside a caller's jit): only then
    can its values be checked."""
    return not isinstance(value, jax.core.Tracer)


def check_class_range(value, n: int, what: str, has: str) -> None:
    """Refuses class indices outside [0, n): a Python int of any size, or a concrete
    integer array, checked BEFORE any cast to int32 (which would wrap 2**32 + 1 to class
    1). A traced array cannot be checked and passes. ``what`` names the indices ("target
    class"), ``has`` what has the n classes ("this model has")."""
    if isinstance(value, int):
        flat = np.asarray([value], dtype=object)
    elif is_concrete(value):
        flat = np.asarray(value).reshape(-1)
    else:
        return
    bad = flat[(flat < 0) | (flat >= n)]
    if bad.size:
        raise ValueError(f"{what} {int(bad[0])} is out of range: {has} {n} classes, so it "
                         f"must lie in [0, {n - 1}]")


def _describe(value) -> str:
    if not is_concrete(value):
        return f"a traced array of shape {value.shape}"
    return f"{value!r} ({type(value).__name__})"


def _static(name: str, value) -> None:
    if not is_concrete(value):
        raise TypeError(f"{name} is a static option (it fixes the compiled program): pass a "
                        f"Python number, not {_describe(value)}; close over it or mark it "
                        "static in your jax.jit")


def check_choice(name: str, value, choices) -> None:
    """Raises ValueError naming the valid choices when ``value`` is not one of them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")


def check_positive_int(name: str, value) -> int:
    """``value`` as a Python int >= 1.

    Integers only (Python ints, NumPy integers, integer 0-d arrays): a float such as 2.5
    is refused rather than truncated, and a bool is refused although Python counts it as
    an int (``n_samples=True`` is a mistake, not one sample).

    Raises:
      TypeError: not an integer, naming ``name``.
      ValueError: an integer below 1, naming ``name``.
    """
    _static(name, value)
    dtype = getattr(value, "dtype", None)
    integral = (jnp.issubdtype(dtype, jnp.integer) and np.ndim(value) == 0 if dtype is not None
                else isinstance(value, int) and not isinstance(value, bool))
    if not integral:
        raise TypeError(f"{name} must be a positive integer, got {_describe(value)}")
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {int(value)}")
    return int(value)


def check_finite_nonneg(name: str, value) -> float:
    """``value`` as a Python float, finite and >= 0 (a NaN or inf option would make every
    map NaN or zero without a word).

    Raises:
      TypeError: not a real number (a bool, a string, an array of several values),
        naming ``name``.
      ValueError: negative, NaN or infinite, naming ``name``.
    """
    _static(name, value)
    dtype = getattr(value, "dtype", None)
    real = ((jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))
            and np.ndim(value) == 0 if dtype is not None
            else isinstance(value, (int, float)) and not isinstance(value, bool))
    if not real:
        raise TypeError(f"{name} must be a finite number >= 0, got {_describe(value)}")
    number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {number}")
    return number


def check_number(name: str, value, *, nonneg: bool = True):
    """A traced numeric option: a concrete value checked (finite, and >= 0 when
    ``nonneg``) and returned as a Python float; a traced scalar returned as is.

    Raises:
      TypeError: not a real scalar, naming ``name``.
      ValueError: negative (when ``nonneg``), NaN or infinite, naming ``name``.
    """
    if not is_concrete(value):
        if value.shape != () or not (jnp.issubdtype(value.dtype, jnp.floating)
                                     or jnp.issubdtype(value.dtype, jnp.integer)):
            raise TypeError(f"{name} must be a real scalar, got {_describe(value)}")
        return value
    if nonneg:
        return check_finite_nonneg(name, value)
    dtype = getattr(value, "dtype", None)
    real = ((jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))
            and np.ndim(value) == 0 if dtype is not None
            else isinstance(value, (int, float)) and not isinstance(value, bool))
    if not real or not math.isfinite(float(value)):
        raise (ValueError if real else TypeError)(
            f"{name} must be a finite number, got {_describe(value)}")
    return float(value)
