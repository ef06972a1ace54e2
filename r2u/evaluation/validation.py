"""Training's validation: a model's predictions on the validation split, scored as
`r2u.evaluation.evaluate` scores a test split, with the operating point of binary
models chosen among thresholds (`r2u.evaluation.operating_point`)."""

from typing import Callable, Dict, Sequence

import tensorflow as tf

from r2u.evaluation import classes as classes_lib
from r2u.evaluation import operating_point
from r2u.evaluation import scoring


def score(predict: Callable, dataset: tf.data.Dataset, headline: str,
          classes: Sequence[str] = ("background", "foreground"),
          examples: int = 3) -> Dict:
    """Training's validation: `predict` (preprocessed [1, H, W, C] -> probabilities
    [1, H, W, K]) scored on a dataset of whole images as `evaluate` scores. Binary: at
    0.5, and the `headline` metric at every threshold (`r2u.evaluation.operating_point`);
    K classes: the argmax, per class, the headline the mean foreground pooled Dice.

    Returns "pooled", "per_image_mean", "operating_point", "num_images" and
    "examples": the first `examples` (image, mask, probabilities) for TensorBoard
    (binary: the foreground probability; K classes: all K).
    """
    if len(classes) > 2:
        return _validate_classes(predict, dataset, classes, examples)
    scorer, sweep, shown = scoring.Scorer(0.5), operating_point.Sweep(headline), []
    for i, example in enumerate(dataset):
        image, mask, fov = (example[k][0] for k in ("image", "mask", "fov"))
        probs = predict(example["image"])[0, ..., 1].numpy()
        scorer.add(str(i), probs, mask.numpy(), fov.numpy())
        sweep.add(probs, mask.numpy(), fov.numpy())
        if len(shown) < examples:
            shown.append((image, mask, probs))
    result = scorer.result()
    del result["pooled"]["counts"]
    return {"pooled": result["pooled"], "per_image_mean": result["per_image_mean"],
            "operating_point": sweep.result(), "num_images": len(scorer.per_image),
            "examples": shown}


def _validate_classes(predict: Callable, dataset: tf.data.Dataset,
                      classes: Sequence[str], examples: int) -> Dict:
    """`score` of a K-class model: argmax scores per class, no threshold."""
    scorer, shown = classes_lib.Scorer(classes), []
    for i, example in enumerate(dataset):
        image, mask, fov = (example[k][0] for k in ("image", "mask", "fov"))
        probs = predict(example["image"])[0].numpy()
        scorer.add(str(i), probs, mask.numpy(), fov.numpy())
        if len(shown) < examples:
            shown.append((image, mask, probs))
    result = scorer.result()
    dice = result["pooled"]["dice"]
    return {"pooled": result["pooled"], "per_image_mean": result["per_image_mean"],
            "operating_point": {"headline": "mean_dice", "threshold": None, "best": dice,
                                "at_0.5": dice},
            "num_images": len(result["per_image"]), "examples": shown}
