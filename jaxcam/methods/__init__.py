"""The methods: a leaf registry (``_registry``) and the families that declare their
methods in it (``_gradient``: the gradient methods; ``_smoothing``: noise smoothing and
Smooth Grad-CAM++; ``_eigen``: the principal components; ``_finer``: FinerCAM;
``_perturbation``: the Score-CAM family and Ablation-CAM; ``_guided``: guided
backpropagation), over the
program every method compiles to (``_pipeline``, ``_measures``) and the wrappers around a
built method (``_explain``: several layers, test-time augmentation, eigen smoothing).

Every public name is re-exported by :mod:`jaxcam`; ``jaxcam.<method>`` is the
registry's function.
"""
