"""FinerCAM (Zhang et al., CVPR 2025): a gradient method's map of the target's score
against the most similar classes', to bring out what tells them apart."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxcam._checks import check_number
from jaxcam.methods._measures import HeadDerivatives, NoiseSmoothed
from jaxcam.methods._pipeline import Built
from jaxcam.methods._registry import MethodInfo, method_info, register_method
from jaxcam.methods._smoothing import a_or_an, gradient_methods
from jaxcam.splitting._split import split_shapes
from jaxcam.targets._objective import Contrast


def _finer_method(method) -> MethodInfo:
    """FinerCAM's method: a registered method whose map comes from head derivatives."""
    info = method_info(method)
    if info.name == "finer_cam" or info.kind != "gradient":
        raise ValueError(
            f"finer_cam runs a gradient method on its contrast score (one whose map comes "
            f"from the head's derivatives: {', '.join(gradient_methods('finer_cam'))}); "
            f"{info.name!r} " + ("is finer_cam itself" if info.name == "finer_cam" else
                                 f"is {a_or_an(info.kind)} method"))
    return info


@register_method(kind="gradient", traced=("alpha",), reference="Zhang et al., CVPR 2025",
                 summary="a gradient method on the target contrasted with its nearest classes",
                 peers=("pytorch-grad-cam FinerCAM",),
                 help={"target": "None (each image's predicted class), an int or an int "
                                 "array (B,): the class c.",
                       "comparisons": "the ranks of the compared classes by logit distance "
                                      "to c (1 = the most similar; pytorch-grad-cam: 1, 2, 3).",
                       "alpha": "the weight of the compared classes' logits (1: a pure "
                                "contrast; 0: c's own logit weighted by the others' "
                                "probabilities; traced).",
                       "method": 'the gradient method run on this score ("grad_cam", as '
                                 'pytorch-grad-cam, or "grad_cam_pp", "layer_cam", ...).'})
def build_finer_cam(split, x, target=None, *, comparisons=(1, 2, 3), alpha: float = 1.0,
                    method: str = "grad_cam", **options) -> Built:
    """FinerCAM (Zhang et al., CVPR 2025, arXiv 2501.11309), as pytorch-grad-cam 1.5.7's
    FinerCAM: ``method`` explaining the target class against its most similar classes.

    The score is sum_j p_j (S_c - alpha S_j) / (sum_j p_j + 1e-9) (``FinerWeightedTarget``)
    with p = softmax(S) (differentiated too) and j the classes ranked ``comparisons`` by
    |S_j - S_c| on the clean image (rank 0 is c itself; ties in the order of the class
    index). Chosen inside the compiled program, so a new target never recompiles.

    Example::

        maps = jaxcam.finer_cam(split, x, 282, comparisons=(1, 2))
    """
    if callable(target):
        raise ValueError("finer_cam builds its own objective from the target class: pass "
                         "None, an int or an int array (B,), not a callable")
    info = _finer_method(method)
    built = info.build(split, x, target, **options)      # checks the target and logits
    n = split_shapes(split, x).outputs.shape[-1]
    ranks = tuple(int(r) for r in np.atleast_1d(comparisons))
    if not ranks or any(r < 1 or r >= n for r in ranks):
        raise ValueError(f"comparisons must be ranks 1..{n - 1} of the classes nearest the "
                         f"target by logit distance (1 = the most similar; 0 is the target "
                         f"itself); got {comparisons!r}")
    program = built.program
    if not isinstance(program.measure, (HeadDerivatives, NoiseSmoothed)):
        raise ValueError(f"finer_cam needs head derivatives; {info.name!r} has none")
    measure = program.measure
    inner = measure.inner if isinstance(measure, NoiseSmoothed) else measure
    inner = inner.replace(objective=inner.objective.contrasted(ranks))
    measure = measure.replace(inner=inner) if isinstance(measure, NoiseSmoothed) else inner
    alpha = jnp.broadcast_to(jnp.asarray(check_number("alpha", alpha, nonneg=False),
                                         x.dtype), built.classes.shape)
    return dataclasses.replace(built, program=program.replace(measure=measure),
                               classes=Contrast(built.classes, alpha))
