"""SavedModel export: a serving signature from raw images to class probabilities.

The wrapper applies the same preprocessing as training, pads to a multiple of 2**depth and
crops back, so a user of the SavedModel needs nothing from r2u:

    probs = tf.saved_model.load(path).serve(images)   # float32 [B, H, W, C] -> [B, H, W, K]

Loading a SavedModel runs the graph it contains: load only model directories you trust.
"""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from r2u import inference
from r2u.data import preprocess


class Exported(tf.Module):
    """The model plus its input contract, as one trackable object."""

    def __init__(self, model: tf.Module, contrast: bool = False):
        super().__init__(name="exported")
        self.model = model
        channels = model.cfg.in_channels
        self.contrast = contrast
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([None, None, None, channels],
                                                        tf.float32, name="images")])

    def _serve(self, images):
        """Raw images (any intensity scale: standardisation removes it) -> probabilities."""
        x = preprocess.preprocess(images, self.model.cfg.in_channels, self.contrast)
        return inference.probabilities(self.model, x)


def foreground(model: tf.Module, images: tf.Tensor) -> tf.Tensor:
    """Foreground probability [B, H, W] of preprocessed images of any size."""
    return inference.probabilities(model, images)[..., 1]


def save(model: tf.Module, path: str, contrast: bool = False) -> str:
    """Writes the SavedModel to a temporary folder, then swaps it in: never half-written."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    exported = Exported(model, contrast)
    tf.saved_model.save(exported, tmp, signatures={"serving_default": exported.serve})
    with open(os.path.join(tmp, "r2u_model.json"), "w") as f:
        json.dump({"model": model.cfg.__dict__, "contrast": contrast}, f, indent=2)
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=".old-export-", dir=parent)
        os.replace(path, os.path.join(old, "export"))
    os.replace(tmp, path)
    if old:
        shutil.rmtree(old)
    return path
