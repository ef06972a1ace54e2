"""SavedModel export: a serving signature from raw images to probabilities and a mask.

The wrapper applies everything training did to an image (the input scale of a dataset
resized at preparation, channels, contrast, standardisation), pads to a multiple of
2**depth and crops back, maps the probabilities back to the input's size and thresholds
them at the operating point chosen on validation images, so a user of the SavedModel
needs nothing from r2u:

    out = tf.saved_model.load(path).serve(images)   # float32 [B, H, W, C] raw pixels
    out["probabilities"]   # float32 [B, H, W, K]
    out["mask"]            # uint8 [B, H, W]: foreground probability > threshold

`r2u_model.json` beside it records the same settings. Loading a SavedModel runs the
graph it contains: load only model directories you trust.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Optional, Tuple

import tensorflow as tf

from r2u import config as config_lib
from r2u import inference
from r2u.data import preprocess


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a raw image goes through before and after the network."""
    contrast: bool = False
    input_size: Optional[Tuple[int, int]] = None  # resize to this (H, W), and back
    threshold: float = 0.5

    @classmethod
    def of(cls, exp: config_lib.Experiment) -> "InputSpec":
        size = exp.data.image_size
        if isinstance(size, int):
            size = (size, size)
        return cls(contrast=exp.data.contrast, input_size=tuple(size) if size else None,
                   threshold=exp.inference.threshold if exp.inference.threshold is not None
                   else 0.5)


class Exported(tf.Module):
    """The model plus its input contract, as one trackable object."""

    def __init__(self, model: tf.Module, spec: InputSpec = InputSpec()):
        super().__init__(name="exported")
        self.model = model
        self.spec = spec
        channels = model.cfg.in_channels
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([None, None, None, channels],
                                                        tf.float32, name="images")])

    def _serve(self, images):
        """Raw images (any intensity scale: standardisation removes it) -> outputs."""
        probs = probabilities(self.model, images, self.spec)
        mask = tf.cast(probs[..., 1] > self.spec.threshold, tf.uint8)
        return {"probabilities": probs, "mask": mask}


def probabilities(model: tf.Module, images: tf.Tensor, spec: InputSpec) -> tf.Tensor:
    """Raw images [B, H, W, C] -> probabilities [B, H, W, K] as training saw them."""
    size = tf.shape(images)[1:3]
    x = images
    if spec.input_size:
        x = tf.image.resize(x, spec.input_size, antialias=True)
    x = preprocess.preprocess(x, model.cfg.in_channels, spec.contrast)
    probs = inference.probabilities(model, x)
    if spec.input_size:
        probs = tf.image.resize(probs, size)
    return probs


def save(model: tf.Module, path: str, exp: Optional[config_lib.Experiment] = None) -> str:
    """Writes the SavedModel to a temporary folder, then swaps it in: never half-written.

    `exp` (the training configuration, with its chosen threshold) gives the input
    contract; None means no resize, no contrast and threshold 0.5.
    """
    spec = InputSpec.of(exp) if exp else InputSpec()
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    exported = Exported(model, spec)
    tf.saved_model.save(exported, tmp, signatures={"serving_default": exported.serve})
    with open(os.path.join(tmp, "r2u_model.json"), "w") as f:
        json.dump({"model": model.cfg.__dict__, **dataclasses.asdict(spec)}, f, indent=2)
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=".old-export-", dir=parent)
        os.replace(path, os.path.join(old, "export"))
    os.replace(tmp, path)
    if old:
        shutil.rmtree(old)
    return path
