"""Checks of the options every public function shares: a choice among names, a positive
integer, a finite non-negative number.

Options fix the compiled program (shapes, loop counts, constants), so they are Python
values, checked once here, never traced; each error names the argument, what was expected
and what came.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _describe(value) -> str:
    if isinstance(value, jax.core.Tracer):
        return f"a traced array of shape {value.shape}"
    return f"{value!r} ({type(value).__name__})"


def _static(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
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
