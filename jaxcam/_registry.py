"""Every CAM method by name: what it needs, what it returns, how it is built.

The command line's choices, the README's method table and the shared test suite are all
read from :data:`METHODS`; a method added here appears in all three.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jaxcam import _methods as M
from jaxcam import _perturbation as P

KINDS = ("gradient", "activation", "perturbation", "guided")
NEEDS = ("key", "guided", "gap_linear_head")


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """A registered method.

    Attributes:
      name: the public function's name, ``jaxcam.<name>``.
      function: ``f(split, x, target=None, *, options) -> maps``.
      build: ``build(split, x, target, **options) -> Built`` (the program and its traced
        arguments); the noise-smoothing combinator and FinerCAM build on it.
      kind: "gradient" (head derivatives at the cut; noise smoothing applies),
        "activation" (the activations alone), "perturbation" (forward passes of masked
        inputs, or head passes of ablated activations) or "guided" (input gradients).
      returns: "map" (B, H, W) in [0, 1], or "input_gradients" (B, H, W, C).
      needs: what the call needs beyond a split and images: "key" (a ``jax.random``
        key), "guided" (``Split(guided=...)``), "gap_linear_head" (a global-average-pool
        + linear head).
      traced: the numeric options that are traced (a new value never recompiles).
      selectable: takes ``channels=`` and ``neurons=`` (feature-map and neuron
        selection, traced too).
      reference: the paper (or library) the method follows.
      summary: one line: what the map is.
    """

    name: str
    function: Callable
    build: Callable | None
    kind: str
    returns: str = "map"
    needs: frozenset = frozenset()
    traced: tuple[str, ...] = ()
    selectable: bool = False
    reference: str = ""
    summary: str = ""


_ENTRIES = [
    MethodInfo("cam", M.cam, M.build_cam, "gradient", needs=frozenset({"gap_linear_head"}),
               selectable=True, reference="Zhou et al., CVPR 2016",
               summary="sum_k W[c, k] A^k with the linear layer's class weights"),
    MethodInfo("grad_cam", M.grad_cam, M.build_grad_cam, "gradient",
               selectable=True, reference="Selvaraju et al., ICCV 2017",
               summary="ReLU(sum_k mean_ij(dY/dA^k) A^k)"),
    MethodInfo("grad_cam_pp", M.grad_cam_pp, M.build_grad_cam_pp, "gradient",
               traced=("eps",), selectable=True, reference="Chattopadhyay et al., WACV 2018",
               summary="pixel-weighted gradients, alpha from D2, D3: closed form or exact"),
    MethodInfo("smooth_grad_cam_pp", M.smooth_grad_cam_pp, None, "gradient",
               needs=frozenset({"key"}), traced=("eps", "noise"),
               selectable=True, reference="Omeiza et al., 2019",
               summary="Grad-CAM++ with D1, D2, D3 averaged over noisy copies of the input"),
    MethodInfo("xgrad_cam", M.xgrad_cam, M.build_xgrad_cam, "gradient", traced=("eps",),
               selectable=True, reference="Fu et al., BMVC 2020",
               summary="sum_k w_k A^k, w_k = sum_ij (A^k_ij / sum_ab A^k_ab) dY/dA^k_ij"),
    MethodInfo("layer_cam", M.layer_cam, M.build_layer_cam, "gradient", selectable=True,
               reference="Jiang et al., IEEE TIP 2021",
               summary="ReLU(sum_k ReLU(dY/dA^k_ij) A^k_ij), element-wise"),
    MethodInfo("hires_cam", M.hires_cam, M.build_hires_cam, "gradient", selectable=True,
               reference="Draelos & Carin, 2020",
               summary="ReLU(sum_k dY/dA^k_ij A^k_ij), element-wise"),
    MethodInfo("grad_cam_elementwise", M.grad_cam_elementwise, M.build_grad_cam_elementwise,
               "gradient", selectable=True, reference="pytorch-grad-cam 1.5.7",
               summary="ReLU(sum_k ReLU(dY/dA^k_ij A^k_ij))"),
    MethodInfo("eigen_cam", M.eigen_cam, M.build_eigen_cam, "activation", selectable=True,
               reference="Muhammad & Yeasin, IJCNN 2020",
               summary="first principal component of A (no gradients, no class)"),
    MethodInfo("eigen_grad_cam", M.eigen_grad_cam, M.build_eigen_grad_cam, "gradient",
               selectable=True, reference="pytorch-grad-cam 1.5.7",
               summary="first principal component of dY/dA * A"),
    MethodInfo("shapley_cam", M.shapley_cam, M.build_shapley_cam, "gradient",
               selectable=True, reference="Cai, 2025 (arXiv 2501.06261)",
               summary="sum_k mean_ij(g - H A / 2) A^k, exact Hessian-vector product, ReST"),
    MethodInfo("finer_cam", M.finer_cam, M.build_finer_cam, "gradient", traced=("alpha",),
               selectable=True, reference="Zhang et al., CVPR 2025",
               summary="a gradient method on the target contrasted with its nearest classes"),
    MethodInfo("score_cam", P.score_cam, P.build_score_cam, "perturbation", traced=("baseline",),
               reference="Wang et al., CVPR-W 2020",
               summary="channel masks over the input, weighted by the target's score on each"),
    MethodInfo("ss_cam", P.ss_cam, P.build_ss_cam, "perturbation", needs=frozenset({"key"}),
               traced=("sigma",), reference="Wang et al., 2020 (SS-CAM); torch-cam 0.5.0",
               summary="Score-CAM with scores averaged over noisy masks"),
    MethodInfo("is_cam", P.is_cam, P.build_is_cam, "perturbation",
               reference="Naidu et al., 2020 (IS-CAM); torch-cam 0.5.0",
               summary="Score-CAM with scores integrated over scaled masks"),
    MethodInfo("ablation_cam", P.ablation_cam, P.build_ablation_cam, "perturbation",
               traced=("value",), reference="Desai & Ramaswamy, WACV 2020",
               summary="sum_k (Y - Y_k) / Y A^k, channel k ablated, through the head alone"),
    MethodInfo("guided_backprop", M.guided_backprop, M.build_guided_backprop, "guided",
               returns="input_gradients", needs=frozenset({"guided"}),
               reference="Springenberg et al., ICLR-W 2015",
               summary="dY/dx through ReLUs that pass only positive gradients"),
    MethodInfo("guided_grad_cam", M.guided_grad_cam, M.build_guided_grad_cam, "guided",
               returns="input_gradients", needs=frozenset({"guided"}),
               selectable=True, reference="Selvaraju et al., ICCV 2017",
               summary="the Grad-CAM map times the guided-backpropagation gradients"),
]

METHODS: dict[str, MethodInfo] = {m.name: m for m in _ENTRIES}


def register(info: MethodInfo) -> None:
    """Adds a method to the registry (its name must be new)."""
    if info.name in METHODS:
        raise ValueError(f"a method named {info.name!r} is already registered")
    if info.kind not in KINDS or not set(info.needs) <= set(NEEDS):
        raise ValueError(f"kind must be one of {KINDS} and needs a subset of {NEEDS}")
    METHODS[info.name] = info


def available_methods() -> list[str]:
    """The names of every registered method, in the registry's order."""
    return list(METHODS)


def method_info(method: str | Callable) -> MethodInfo:
    """The :class:`MethodInfo` of a method given by name or by its function.

    Raises:
      ValueError: not a registered method, naming the registered ones.
    """
    for info in METHODS.values():
        if method == info.name or method is info.function:
            return info
    raise ValueError(f"unknown method {getattr(method, '__name__', method)!r}; the "
                     f"registered methods are {available_methods()}")


def smoothed(method: str | Callable) -> Callable:
    """Noise smoothing of any gradient method: the method with its head derivatives
    averaged over ``n_samples`` noisy copies of the input (the evidence is averaged, not
    the maps: D1 for Grad-CAM, D1..D3 for Grad-CAM++, as Smooth Grad-CAM++ does).

    The returned function takes the method's options plus ``key``, ``n_samples``,
    ``noise``, ``sample_chunk`` and ``devices`` (:func:`jaxcam.smooth_grad_cam_pp`).

    Example::

        smooth_grad_cam = jaxcam.smoothed("grad_cam")
        maps = smooth_grad_cam(split, x, 282, key=jax.random.key(0), n_samples=16)

    Raises:
      ValueError: an unknown method, or one that is not gradient-based.
    """
    info = method_info(method)
    if info.kind != "gradient" or info.build is None:
        raise ValueError(f"noise smoothing averages head derivatives: it applies to the "
                         f"gradient methods {[m.name for m in METHODS.values() if m.kind == 'gradient' and m.build]}, "
                         f"not to {info.name!r}")
    return M.noise_smoothed(info.build, info.name)


def _needs_text(info: MethodInfo) -> str:
    return ", ".join(sorted(info.needs)) or "-"


def method_table() -> str:
    """The registry as a Markdown table (the README's method table)."""
    rows = ["| method | map | needs | returns | traced options | reference |",
            "|---|---|---|---|---|---|"]
    for info in METHODS.values():
        traced = [f"`{t}`" for t in info.traced] + (["selection"] if info.selectable else [])
        rows.append(f"| `{info.name}` | {info.summary} | {_needs_text(info)} | {info.returns} "
                    f"| {', '.join(traced) or '-'} | {info.reference} |")
    return "\n".join(rows) + "\n"
