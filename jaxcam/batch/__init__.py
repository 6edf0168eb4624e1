"""Explaining and scoring many photos in batches over every device (what ``jaxcam explain``
and ``jaxcam evaluate`` run).

Example::

    split = jaxcam.models.load("efficientnet_lite0")
    config = jaxcam.batch.RunConfig("efficientnet_lite0", (jaxcam.place(split),),
                                    jaxcam.batch.parse_methods("grad_cam"), out=Path("out"))
    for record in jaxcam.batch.explain_photos(jaxcam.batch.find_images(["photos/"]), config):
        print(record["path"], record.get("class"), record.get("error"))
"""

from jaxcam.batch._inputs import DERIVATIVES as DERIVATIVES
from jaxcam.batch._inputs import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from jaxcam.batch._results import JsonLines as JsonLines
from jaxcam.batch._inputs import MethodSpec as MethodSpec
from jaxcam.batch._results import OutputFolder as OutputFolder
from jaxcam.batch._inputs import Photo as Photo
from jaxcam.batch._explain import RunConfig as RunConfig
from jaxcam.batch._results import done_paths as done_paths
from jaxcam.batch._explain import explain_photos as explain_photos
from jaxcam.batch._explain import explain_step as explain_step
from jaxcam.batch._inputs import find_images as find_images
from jaxcam.batch._explain import num_classes as num_classes
from jaxcam.batch._inputs import parse_methods as parse_methods
from jaxcam.batch._results import read_results as read_results
from jaxcam.batch._results import results_name as results_name
from jaxcam.batch._evaluate import DEFAULT_METRICS as DEFAULT_METRICS
from jaxcam.batch._evaluate import METRICS as METRICS
from jaxcam.batch._evaluate import EvalConfig as EvalConfig
from jaxcam.batch._evaluate import evaluate_photos as evaluate_photos
from jaxcam.batch._evaluate import evaluate_step as evaluate_step
from jaxcam.batch._evaluate import parse_metrics as parse_metrics
from jaxcam.batch._evaluate import summarise as summarise
from jaxcam.batch._evaluate import summary_markdown as summary_markdown

__all__ = ["DEFAULT_METRICS", "DERIVATIVES", "EvalConfig", "IMAGE_SUFFIXES", "JsonLines",
           "METRICS", "MethodSpec", "OutputFolder", "Photo", "RunConfig", "done_paths",
           "evaluate_photos", "evaluate_step", "explain_photos", "explain_step",
           "find_images", "num_classes", "parse_methods", "parse_metrics", "read_results",
           "results_name", "summarise", "summary_markdown"]
