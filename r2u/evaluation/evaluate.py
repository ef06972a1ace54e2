"""Test-set evaluation of a trained model: per-image and aggregate scores, as JSON.

Images are read raw (uint8, as prepared) and predicted whole through the model's own
preprocessing (`loading.Predictor.predict`: padded to a multiple of 2**depth and
cropped back) or in overlapping tiles. Only field-of-view pixels are scored. Two
aggregates are reported, labelled: "pooled" counts all FOV pixels of all images
together, "per_image_mean" averages each image's scores (see `r2u.evaluation.metrics`). With a
second human observer ("mask2", DRIVE's test split), the same scores of observer 2
against observer 1 give the human baseline.
"""

import dataclasses
import io
import itertools
import os
import time
from typing import Dict, Iterator, Optional, Union

import numpy as np
from absl import logging

from r2u import config as config_lib
from r2u import figures
from r2u import files
from r2u.data import manifest as manifest_lib
from r2u.data import prepare
from r2u.data import prepared
from r2u.evaluation import classes as classes_lib
from r2u.evaluation import metrics
from r2u.evaluation import scoring
from r2u.inference import loading

Data = Union[prepared.PreparedData, str]  # a prepared dataset, or its folder

DEFINITIONS = {
    "pooled": "scores of the confusion counts (and AUC) of all FOV pixels of all "
              "images counted together",
    "per_image_mean": "mean over images of each image's scores (FOV pixels only)",
    "threshold": "a pixel is predicted foreground iff probability > threshold; the "
                 "model's threshold was chosen on the validation split",
    "at_threshold_0.5": "the same scores at threshold 0.5",
    "auc": "exact rank-based ROC AUC (Mann-Whitney on float64 probabilities, ties "
           "count 1/2, no bins)",
    "balanced_accuracy": "the second observer's binary mask has no ranking: its "
                         "'AUC' is (sensitivity + specificity) / 2",
}


@dataclasses.dataclass(frozen=True)
class Options:
    """What to compute and write besides the scores.

    Attributes:
      threshold: a pixel is foreground iff its probability > threshold; None uses
        the model's own (chosen on validation images, 0.5 if none was).
      tile: 0 predicts images whole; > 0 averages overlapping tiles of this size.
      stride: tile offset; 0 means tile // 2.
      second_observer: also score the split's "mask2" against "mask".
      max_images: evaluate at most this many images (None: all).
      figures: write a figure PNG for the first `figures` images into `figures_dir`.
      figures_dir: folder of the figures.
      probs_dir: if set, write each probability map as float32 `<id>.npy` (binary:
        the foreground [H, W]; K classes: [H, W, K]).
      mode: None keeps the model's inference mode (chosen on validation); "whole" or
        "sliding_window" (with `window` and `overlap`) overrides it.
    """
    threshold: Optional[float] = None
    tile: int = 0
    stride: int = 0
    mode: Optional[str] = None
    window: Optional[int] = None
    overlap: float = 0.5
    second_observer: bool = False
    max_images: Optional[int] = None
    figures: int = 0
    figures_dir: Optional[str] = None
    probs_dir: Optional[str] = None


def raw_examples(data: Data, split: str, with_mask2: bool = False) -> Iterator[Dict]:
    """The examples of a prepared split as numpy (`PreparedData.examples`)."""
    return prepared.of(data).examples(split, with_mask2)


def has_mask2(data: Data, split: str) -> bool:
    """True if `split` of the prepared dataset has a second observer's masks."""
    return prepared.of(data).has_mask2(split)


def resolve_data(predictor: loading.Predictor, work_dir: str,
                 dataset: Optional[str] = None, data_dir: Optional[str] = None
                 ) -> tuple:
    """The prepared data folder to evaluate on, preparing raw data if needed.

    Args:
      predictor: gives the training configuration (dataset, data_dir, image_size).
      work_dir: raw data is prepared into `work_dir/data` (the training dataset, as
        `bin/train` does) or `work_dir/data-<dataset>` (another dataset).
      dataset: overrides the training dataset.
      data_dir: a prepared folder (with manifest.json) or a raw dataset folder;
        overrides the training data_dir.

    Returns:
      (prepared folder, dataset name).

    Raises:
      ValueError: no dataset known (no config.json and no `dataset`).
    """
    if data_dir and os.path.isfile(manifest_lib.path(data_dir)):
        return data_dir, manifest_lib.load(data_dir)["dataset"]
    exp = predictor.experiment
    trained_on = exp.data.dataset if exp else None
    dataset = dataset or trained_on
    if dataset is None:
        raise ValueError("the model folder has no config.json: give the dataset "
                         "(--dataset) or a prepared --data_dir")
    same = dataset == trained_on
    raw = data_dir or (exp.data.data_dir if same else None)
    data = (exp if same else config_lib.preset(dataset)).data
    out = os.path.join(work_dir, "data" if same else f"data-{dataset}")
    return prepare.ensure_prepared(dataset, raw, out, data.image_size,
                                   data.validation_count), dataset


def evaluate(predictor: loading.Predictor, data: Data, split: str,
             options: Options = Options()) -> Dict:
    """Scores `predictor` on `split` of a prepared dataset (or its folder).

    Returns:
      A JSON-friendly dict: "per_image" ([{"id", metrics...}]), "pooled" (metrics plus
      "counts" for binary, "matrix" for K classes), "per_image_mean" (each aggregate
      with "per_class": {class name: scores}), "num_images", optionally
      "second_observer" (the same three for mask2 vs mask), "model", "data",
      "inference", "definitions" and "wall_time_seconds".

    Raises:
      ValueError: `second_observer` on a split without mask2, or an empty split.
    """
    start = time.perf_counter()
    data = prepared.of(data)
    if options.second_observer and not data.has_mask2(split):
        raise ValueError(f"{data.path}: split {split!r} has no second observer (mask2)")
    if options.mode is not None:
        predictor = predictor.with_inference(options.mode, options.window,
                                             options.overlap)
    threshold = predictor.threshold if options.threshold is None else options.threshold
    options = dataclasses.replace(options, threshold=threshold)
    examples = raw_examples(data, split, options.second_observer)
    if options.max_images is not None:
        examples = itertools.islice(examples, options.max_images)
    names = data.classes
    score = _score_binary if len(names) == 2 else _score_classes
    result = score(predictor, examples, names, options)
    if not result["per_image"]:
        raise ValueError(f"{data.path}: split {split!r} has no images")
    tile, spec = options.tile, predictor.spec
    mode = "tiled" if tile else spec.mode
    result.update(
        num_images=len(result["per_image"]), model=predictor.info(),
        definitions=DEFINITIONS,
        data={"data_dir": os.path.abspath(data.path), "split": split,
              "dataset": data.name, "classes": list(names)},
        inference={"threshold": threshold if len(names) == 2 else None,
                   "fov_masked": True, "mode": mode, "tile": tile or None,
                   "stride": (options.stride or tile // 2) if tile else None,
                   "window": spec.window if mode == "sliding_window" else None,
                   "overlap": spec.overlap if mode == "sliding_window" else None},
        wall_time_seconds=time.perf_counter() - start)
    return _nan_to_none(result)


def _nan_to_none(value):
    """NaN scores (a class absent from an image and its prediction) as JSON null."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _score_binary(predictor, examples, names, options: Options) -> Dict:
    """Binary scores at the threshold (and 0.5), exact AUC, and the per-class block
    of the foreground class at the threshold."""
    threshold = options.threshold
    model = scoring.Scorer(threshold, exact_auc=True, also_at=0.5)
    per_class = classes_lib.Scorer(names)
    observer = scoring.Scorer(0.5)  # a binary 0/1 mask
    for i, ex in enumerate(examples):
        probs = predictor.predict_image(ex["image"], options.tile, options.stride,
                                        fov=ex["fov"])[..., 1]
        scores = model.add(ex["id"], probs, ex["mask"], ex["fov"])
        predicted = (probs > np.float32(threshold)).astype(np.float32)
        per_class.add(ex["id"], np.stack([1 - predicted, predicted], -1), ex["mask"],
                      ex["fov"])
        if options.second_observer:
            observer.add(ex["id"], ex["mask2"].astype(np.float32), ex["mask"],
                         ex["fov"])
        _write_extras(i, ex, probs, options)
        logging.info("%s: dice %.4f auc %.4f", ex["id"], scores["dice"], scores["auc"])
    if not model.per_image:
        return {"per_image": []}
    result = model.result()
    classes = per_class.result()
    for kind in ("pooled", "per_image_mean"):
        result[kind]["per_class"] = classes[kind]["per_class"]
    result["at_threshold_0.5"] = model.result_also()
    if options.second_observer:
        result["second_observer"] = _balanced_accuracy(observer.result())
    return result


def _score_classes(predictor, examples, names, options: Options) -> Dict:
    """K-class scores of the argmax, per class and their foreground means."""
    scorer = classes_lib.Scorer(names)
    for i, ex in enumerate(examples):
        probs = predictor.predict_image(ex["image"], options.tile, options.stride,
                                        fov=ex["fov"])
        scores = scorer.add(ex["id"], probs, ex["mask"], ex["fov"])
        _write_extras(i, ex, probs, options, names)
        logging.info("%s: mean foreground dice %.4f", ex["id"], scores["dice"])
    if not scorer.per_image:
        return {"per_image": []}
    result = scorer.result()
    del result["class_names"]
    return result


def _balanced_accuracy(result: Dict) -> Dict:
    """A binary predictor's "AUC" is (sensitivity + specificity) / 2: say so."""
    for part in [result["pooled"], *result["per_image"]]:
        del part["auc"]
        part["balanced_accuracy"] = (part["sensitivity"] + part["specificity"]) / 2
    means = result["per_image_mean"]
    del means["auc"]
    means["balanced_accuracy"] = float(np.mean([p["balanced_accuracy"]
                                                for p in result["per_image"]]))
    return result


def _write_extras(index: int, example: Dict, probs: np.ndarray,
                  options: Options, names=()) -> None:
    name = files.safe_name(example["id"])
    if options.probs_dir:
        os.makedirs(options.probs_dir, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, probs.astype(np.float32))
        files.write_atomic(os.path.join(options.probs_dir, name + ".npy"),
                           buffer.getvalue())
    if index < options.figures and options.figures_dir:
        os.makedirs(options.figures_dir, exist_ok=True)
        if probs.ndim == 3:  # K classes: truth | prediction in the class colours
            picture = figures.class_figure(example["image"], example["mask"],
                                           probs.argmax(-1), example["fov"], names)
        else:
            picture = figures.figure(example["image"], example["mask"], probs,
                                     example["fov"], options.threshold)
        files.write_png(os.path.join(options.figures_dir, name + ".png"), picture)


def format_table(result: Dict) -> str:
    """The aggregate rows (model, and second observer if present) as a text table;
    for K classes, a row per class and aggregate."""
    if result["inference"]["threshold"] is None:
        return _class_table(result)
    names = metrics.METRIC_NAMES
    lines = [f"{'':36s}" + "".join(f"{n[:11]:>12s}" for n in names)]
    rows = [(f"model t={result['inference']['threshold']:.2f}", result)]
    if "at_threshold_0.5" in result:
        rows.append(("model t=0.5", result["at_threshold_0.5"]))
    if "second_observer" in result:
        rows.append(("2nd observer", result["second_observer"]))
    for label, part in rows:
        for kind in ("pooled", "per_image_mean"):
            values = [part[kind].get(n, part[kind].get("balanced_accuracy"))
                      if n == "auc" else part[kind][n] for n in names]
            lines.append(f"{label + ' ' + kind:36s}" + "".join(
                f"{'-':>12s}" if v is None else f"{v:12.4f}" for v in values))
    return "\n".join(lines)


def _class_table(result: Dict) -> str:
    """Rows of each foreground class and of their mean, pooled and per-image mean."""
    names = classes_lib.SCORE_NAMES
    lines = [f"{'':36s}" + "".join(f"{n[:11]:>12s}" for n in names)]
    for kind in ("pooled", "per_image_mean"):
        part = result[kind]
        rows = [("mean of foreground", part)] + [
            (name, scores) for name, scores in part["per_class"].items()
            if name != result["data"]["classes"][0]]
        for label, scores in rows:
            lines.append(f"{label[:24] + ' ' + kind:36s}" + "".join(
                f"{'-':>12s}" if scores[n] is None else f"{scores[n]:12.4f}"
                for n in names))
    return "\n".join(lines)
