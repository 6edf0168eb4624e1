"""The suite's cases and the peers each is compared with.

A :class:`Case` is one (model, layer, size, method, options, batch size); ``SUITES`` names
the quick and full suites. Which peer classes a method has comes from its declaration
(``MethodInfo.peers``); :func:`case_peers` keeps those whose computation is the case's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import jaxcam

# The peers' libraries, as the method declarations name them (``MethodInfo.peers``).
LIBRARIES = {"pytorch-grad-cam": "pytorch_grad_cam", "torch-cam": "torchcam"}
# Peer classes the suite does not call, and why (every other declared peer is called).
NOT_CALLED = {
    "CAM": "needs the classifier's fc layer, not a target layer",
    "FinerCAM": "takes a base method object and a contrast count",
    "ShapleyCAM": "needs second-order autograd through the model",
    "AblationCAM": "replaces the target layer by its own ablation module",
    "GuidedBackpropReLUModel": "returns input gradients, not maps",
}


@dataclasses.dataclass(frozen=True)
class Peer:
    """How the suite calls one peer class.

    Attributes:
      library: the import name (``pytorch_grad_cam``, ``torchcam``).
      cls: the class.
      matches: jaxcam options (name, value) under which the peer computes the same maps
        (e.g. Score-CAM's ``variant``); a case without them gets no row of this peer.
      takes: the jaxcam options the peer is given, in its own terms (``peer_options``).
    """

    library: str
    cls: str
    matches: tuple = ()
    takes: tuple = ()


# (method, library) -> what the peer needs beyond a plain call
_PEER_TERMS = {
    ("smooth_grad_cam_pp", "torchcam"): ((("variant", "torchcam"),), ("n_samples", "noise")),
    ("score_cam", "pytorch_grad_cam"): ((("variant", "pytorch-grad-cam"),), ("chunk_size",)),
    ("score_cam", "torchcam"): ((("variant", "torchcam"),), ("chunk_size",)),
}


def peers(method: str) -> tuple[Peer, ...]:
    """The peer classes the suite calls for a jaxcam method, from its declaration."""
    out = []
    for name in jaxcam.method_info(method).peers:
        library, _, cls = name.partition(" ")
        if cls in NOT_CALLED or library not in LIBRARIES:
            continue
        lib = LIBRARIES[library]
        matches, takes = _PEER_TERMS.get((method, lib), ((), ()))
        out.append(Peer(lib, cls, matches, takes))
    return tuple(out)


def case_peers(case) -> tuple[Peer, ...]:
    """The peers whose computation is the case's: every option the case sets is one the
    peer matches or takes (exact derivatives, top_n... have no peer)."""
    spec = jaxcam.batch.parse_methods(case.method)[0]
    options = {**dict(spec.options), **dict(case.options)}
    return tuple(p for p in peers(spec.name)
                 if all(options.get(k) == v for k, v in p.matches)
                 and set(options) <= {k for k, _ in p.matches} | set(p.takes))



@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    layer: str
    size: int
    method: str                  # a jaxcam.batch method spec: grad_cam_pp:exact
    batch_size: int
    options: tuple = ()          # extra keyword options, e.g. (("n_samples", 8),)
    peers: bool = True
    repeats: int | None = None   # timed calls, where the suite's number would be too slow


def make_cases(models, methods, batch_sizes, size, extra=None, repeats=None) -> list[Case]:
    out = []
    for model in models:
        layer = jaxcam.models.default_layer(model)
        for method in methods:
            for b in batch_sizes:
                out.append(Case(model, layer, size, method, b,
                                tuple(sorted((extra or {}).get(method.partition(":")[0],
                                                               {}).items())),
                                repeats=repeats))
    return out


SUITES = {
    # about 5 minutes on 2 CPU cores
    "quick": lambda: make_cases(
        ["resnet18"], ["grad_cam", "grad_cam_pp", "grad_cam_pp:exact", "xgrad_cam",
                       "layer_cam", "smooth_grad_cam_pp"], [1, 8], 112,
        {"smooth_grad_cam_pp": {"n_samples": 8}})
    + make_cases(["resnet18"], ["score_cam"], [1], 112, {"score_cam": {"chunk_size": 64}}),
    # about an hour on 2 CPU cores: run it in parts, --part N/M
    "full": lambda: make_cases(
        ["resnet50"], ["grad_cam", "grad_cam_pp", "grad_cam_pp:exact", "xgrad_cam",
                       "layer_cam", "hires_cam", "grad_cam_elementwise", "eigen_cam",
                       "eigen_grad_cam"], [1, 8, 32], 224)
    + make_cases(["resnet50"], ["smooth_grad_cam_pp:variant=torchcam"], [1, 4], 224,
             {"smooth_grad_cam_pp": {"n_samples": 25}}, repeats=3)
    + make_cases(["resnet18"], ["score_cam:variant=pytorch-grad-cam", "score_cam:variant=torchcam"],
             [1], 224, {"score_cam": {"chunk_size": 64}}, repeats=3)
    + make_cases(["resnet50"], ["ablation_cam"], [1], 224, repeats=3)
    + make_cases(["vgg16"], ["grad_cam", "grad_cam_pp", "grad_cam_pp:exact"], [1, 8], 224),
}

def effective_options(case) -> dict:
    """The case's jaxcam options with the method's declared defaults filled in."""
    spec = jaxcam.batch.parse_methods(case.method)[0]
    info = jaxcam.method_info(spec.name)
    given = {**dict(spec.options), **dict(case.options)}
    return {o.name: given.get(o.name, o.default) for o in info.options if not o.required}


def peer_kwargs(peer: Peer, case, x: np.ndarray) -> dict:
    """The peer constructor's keyword arguments (and attributes) for the case's options.

    Smooth Grad-CAM++: torch-cam's noise is absolute, jaxcam's a fraction of the batch's
    spread (max - min), so the peer gets ``noise * spread``. Score-CAM: the peer's batch
    of masked images is jaxcam's ``chunk_size`` (16 where unset, pytorch-grad-cam's
    default)."""
    options = effective_options(case)
    if peer.cls == "SmoothGradCAMpp":
        return {"num_samples": int(options["n_samples"]),
                "std": float(options["noise"]) * float(x.max() - x.min())}
    if peer.cls == "ScoreCAM":
        chunk = options.get("chunk_size") or 16
        extra = {"input_shape": (3, case.size, case.size)} if peer.library == "torchcam" else {}
        return {"batch_size": int(chunk), **extra}
    return {}
