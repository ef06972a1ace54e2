"""Scores of foreground probabilities against a mask, FOV pixels only: per image and
pooled over images (`Scorer`), at a threshold and, from the same pass, at a second one.
"""

from typing import Dict, Optional

import numpy as np

from r2u.evaluation import metrics


def score(probs: np.ndarray, mask: np.ndarray, fov: np.ndarray,
          threshold: float) -> Dict[str, float]:
    """The eight metrics of one image ([H, W] arrays), FOV pixels only."""
    scores = metrics.per_image_scores(probs[None], mask[None], fov[None] > 0, threshold)
    return {name: float(scores[name][0]) for name in metrics.METRIC_NAMES}


class Scorer:
    """Per-image scores and pooled counts of one predictor (model or observer).

    With `exact_auc`, AUC is rank-based on the probabilities themselves (every FOV
    pixel is kept until `result`); otherwise it comes from the streaming histogram.
    `also_at` is a second threshold whose scores (no AUC: it does not depend on the
    threshold) come from exact counts of the same pass (`result_also`).
    """

    def __init__(self, threshold: float, exact_auc: bool = False,
                 also_at: Optional[float] = None):
        self.threshold = threshold
        self.pooled = metrics.StreamingMetrics(threshold=threshold)
        self.per_image = []
        self.scores = ([], []) if exact_auc else None  # positives, negatives
        self.also_at = also_at
        self.also = {"counts": np.zeros(len(metrics.COUNT_NAMES), np.int64),
                     "per_image": []}

    def add(self, name: str, probs, mask, fov) -> Dict[str, float]:
        self.pooled.update(probs, mask, fov > 0)
        scores = {"id": name, **score(probs, mask, fov, self.threshold)}
        if self.also_at is not None:
            counts = _counts(probs, mask, fov, self.also_at)
            self.also["counts"] += counts
            self.also["per_image"].append(_scores(counts))
        if self.scores is not None:
            inside, truth = fov > 0, mask > 0
            pos, neg = probs[inside & truth], probs[inside & ~truth]
            scores["auc"] = metrics.exact_auc(pos, neg)
            self.scores[0].append(pos.astype(np.float32))
            self.scores[1].append(neg.astype(np.float32))
        self.per_image.append(scores)
        return scores

    def result(self) -> Dict:
        counts = {k: float(v) for k, v in self.pooled.counts().items()}
        pooled = {k: float(v) for k, v in self.pooled.result().items()}
        if self.scores is not None:
            pooled["auc"] = metrics.exact_auc(*(np.concatenate(s) for s in self.scores))
        means = metrics.summarize([{k: v for k, v in s.items() if k != "id"}
                                   for s in self.per_image])
        return {"per_image": self.per_image, "pooled": {**pooled, "counts": counts},
                "per_image_mean": means}

    def result_also(self) -> Dict:
        """"pooled" (with "counts") and "per_image_mean" scores at `also_at`."""
        counts = self.also["counts"]
        return {"pooled": {**_scores(counts),
                           "counts": dict(zip(metrics.COUNT_NAMES, map(float, counts)))},
                "per_image_mean": metrics.summarize(self.also["per_image"])}


def _counts(probs, mask, fov, threshold: float) -> np.ndarray:
    """Exact [tp, fp, fn, tn] of FOV pixels, as `r2u.evaluation.metrics` counts them."""
    predicted = np.asarray(probs, np.float32) > np.float32(threshold)
    truth = np.asarray(mask, np.float32) > 0.5
    inside = np.asarray(fov) > 0
    return np.array([np.count_nonzero(inside & p & t) for p, t in (
        (predicted, truth), (predicted, ~truth), (~predicted, truth),
        (~predicted, ~truth))], np.int64)


def _scores(counts: np.ndarray) -> Dict[str, float]:
    scores = metrics.scores(dict(zip(metrics.COUNT_NAMES, counts.astype(np.float64))))
    return {name: float(value) for name, value in scores.items()}
