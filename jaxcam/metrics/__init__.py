"""Faithfulness and localisation metrics of saliency maps, batched and jit-compiled.

Every metric takes per-image arrays and returns per-image values (B,); averaging is the
caller's (:func:`summary` gives means with bootstrap intervals). The conventions:

* ``predict``: any function ``x (B, H, W, 3) -> scores (B, C)``, e.g. class
  probabilities; :func:`predictor` builds one from a split or a model.
* ``maps``: (B, h, w) in [0, 1] (``jaxcam.weighting.normalize``), resized bilinearly with
  half-pixel centres to the input's (H, W) when their size differs.
* ``classes``: (B,) integer classes whose score is followed.

The definitions (and where the peers differ) are in the README's "Scoring maps" section.
Faithfulness:

* :func:`average_drop`, :func:`increase_in_confidence`, :func:`confidence_change`: the
  score of the input multiplied by the map, against the input's (Chattopadhyay et al.).
* :func:`deletion`, :func:`insertion` (RISE, Petsiuk et al.): pixels removed from, or
  restored to, the input in descending order of the map; the area under the score's curve.
  Every step of every image is a row of batched forwards, ``chunk_size`` steps at a time.
* :func:`road`, :func:`road_combined` (Rong et al.): pixels removed by percentile of the
  map and filled by linear imputation (:func:`linear_imputation`, conjugate gradients on
  the stencil), so the removal itself leaks no shape.

:func:`sanity_check` is Adebayo et al.'s model-parameter randomisation test.

Localisation, against (B, H, W) boolean masks of the object:

* :func:`pointing_game` (Zhang et al.), :func:`energy_pointing_game` (Score-CAM's),
  :func:`relevance_rank_accuracy`.
"""

from jaxcam.metrics._faithfulness import average_drop as average_drop
from jaxcam.metrics._faithfulness import blurred as blurred
from jaxcam.metrics._faithfulness import confidence_change as confidence_change
from jaxcam.metrics._faithfulness import curve_counts as curve_counts
from jaxcam.metrics._faithfulness import deletion as deletion
from jaxcam.metrics._faithfulness import increase_in_confidence as increase_in_confidence
from jaxcam.metrics._faithfulness import insertion as insertion
from jaxcam.metrics._faithfulness import trapezoid_auc as trapezoid_auc
from jaxcam.metrics._inputs import LINKS as LINKS
from jaxcam.metrics._inputs import predictor as predictor
from jaxcam.metrics._localisation import energy_pointing_game as energy_pointing_game
from jaxcam.metrics._localisation import pointing_game as pointing_game
from jaxcam.metrics._localisation import relevance_rank_accuracy as relevance_rank_accuracy
from jaxcam.metrics._road import ORDERS as ORDERS
from jaxcam.metrics._road import ROAD_PERCENTILES as ROAD_PERCENTILES
from jaxcam.metrics._road import linear_imputation as linear_imputation
from jaxcam.metrics._road import road as road
from jaxcam.metrics._road import road_combined as road_combined
from jaxcam.metrics._sanity import SanityCheck as SanityCheck
from jaxcam.metrics._sanity import forward_order as forward_order
from jaxcam.metrics._sanity import sanity_check as sanity_check
from jaxcam.metrics._statistics import spearman as spearman
from jaxcam.metrics._statistics import summary as summary

__all__ = ["LINKS", "ORDERS", "ROAD_PERCENTILES", "average_drop", "blurred",
           "confidence_change", "curve_counts", "deletion", "energy_pointing_game",
           "increase_in_confidence", "insertion", "linear_imputation", "pointing_game",
           "forward_order", "predictor", "relevance_rank_accuracy", "road", "road_combined",
           "SanityCheck", "sanity_check", "spearman", "summary", "trapezoid_auc"]
