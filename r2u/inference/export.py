"""SavedModel export: a serving signature from raw images to probabilities and labels.

The wrapper applies everything training did to an image (the input scale: a fixed
size or the plan's resampling factor; channels, contrast, standardisation), runs the
network in the inference mode chosen on validation (whole image, padded to a multiple
of 2**depth and cropped back, or Gaussian-weighted sliding windows), maps the
probabilities back to the input's size and turns them into labels (binary: the
foreground probability above the operating point chosen on validation images; K
classes: the argmax), so a user of the SavedModel needs nothing from r2u:

    out = tf.saved_model.load(path).serve(images)   # float32 [B, H, W, C] raw pixels
    out["probabilities"]   # float32 [B, H, W, K]
    out["labels"]          # int32 [B, H, W]: the class of each pixel
    out["mask"]            # uint8 [B, H, W], binary models only: labels as 0/1

A model standardised over the field of view (`Preprocessing.standardize_in_fov`)
serves `serve(images, fov)` with a float32 [B, H, W] field of view.

`r2u_model.json` beside it records the same settings (`InputSpec`), the class
names among them. Loading a
SavedModel runs the graph it contains: load only model directories you trust.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Optional, Tuple

import tensorflow as tf

from r2u import config as config_lib
from r2u.inference import network
from r2u.inference import sliding_window
from r2u.data import preprocess


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a raw image goes through before and after the network: the training
    preprocessing, the input scale and the operating point."""
    preprocessing: config_lib.Preprocessing = config_lib.Preprocessing()
    input_size: Optional[Tuple[int, int]] = None  # resize to this (H, W), and back
    threshold: float = 0.5
    scale: Optional[float] = None  # or resample by this factor, and back
    mode: str = "whole"            # or "sliding_window"
    window: Optional[int] = None
    overlap: float = 0.5
    classes: Tuple[str, ...] = ()  # names in index order; () = unnamed
    sixteen_bit: str = "high_byte"  # how image files of 16 bits become 8 (imageio)

    @property
    def contrast(self) -> bool:
        return self.preprocessing.contrast

    @property
    def needs_fov(self) -> bool:
        return self.preprocessing.standardize_in_fov

    @classmethod
    def of(cls, exp: config_lib.Experiment) -> "InputSpec":
        size = exp.data.image_size
        if isinstance(size, int):
            size = (size, size)
        inference = exp.inference
        return cls(preprocessing=exp.preprocessing,
                   input_size=tuple(size) if size else None,
                   threshold=inference.threshold if inference.threshold is not None
                   else 0.5, scale=exp.data.scale, mode=inference.mode,
                   window=inference.window, overlap=inference.overlap,
                   classes=tuple(exp.data.classes),
                   sixteen_bit="window" if exp.data.dataset == "folder" else "high_byte")

    @classmethod
    def from_info(cls, info: dict) -> "InputSpec":
        """Reads `r2u_model.json` of every layout (older ones: a bare `contrast`)."""
        spec = info.get("preprocessing") or {"contrast": bool(info.get("contrast", False))}
        spec = config_lib.Preprocessing(**spec)
        if spec.channels is None:
            spec = dataclasses.replace(spec, channels=info["model"]["in_channels"])
        size = info.get("input_size")
        return cls(preprocessing=spec, input_size=tuple(size) if size else None,
                   threshold=float(info.get("threshold", 0.5)),
                   scale=info.get("scale"), mode=info.get("mode", "whole"),
                   window=info.get("window"), overlap=info.get("overlap", 0.5),
                   classes=tuple(info.get("classes", ())),
                   sixteen_bit=info.get("sixteen_bit", "high_byte"))

    def for_model(self, model_cfg: config_lib.ModelConfig) -> "InputSpec":
        """This spec with the network's input channels filled in (or checked)."""
        channels = self.preprocessing.channels
        if channels is None:
            return dataclasses.replace(self, preprocessing=dataclasses.replace(
                self.preprocessing, channels=model_cfg.in_channels))
        if channels != model_cfg.in_channels:
            raise ValueError(f"preprocessing.channels {channels} != model in_channels "
                             f"{model_cfg.in_channels}")
        return self


class Exported(tf.Module):
    """The model plus its input contract, as one trackable object."""

    def __init__(self, model: tf.Module, spec: InputSpec = InputSpec()):
        super().__init__(name="exported")
        self.model = model
        self.spec = spec.for_model(model.cfg)
        signature = [tf.TensorSpec([None, None, None, model.cfg.in_channels],
                                   tf.float32, name="images")]
        if self.spec.needs_fov:
            signature.append(tf.TensorSpec([None, None, None], tf.float32, name="fov"))
        # No autograph: the function has no tensor-dependent Python control flow, and
        # autograph re-reads the source when it traces (an export at the end of a long
        # run failed on a file edited meanwhile).
        self.serve = tf.function(self._serve, input_signature=signature, autograph=False)

    def _serve(self, images, fov=None):
        """Raw images (any intensity scale: standardisation removes it) -> outputs."""
        probs = probabilities(self.model, images, self.spec, fov)
        if self.model.cfg.num_classes == 2:
            mask = tf.cast(probs[..., 1] > self.spec.threshold, tf.uint8)
            return {"probabilities": probs, "labels": tf.cast(mask, tf.int32),
                    "mask": mask}
        return {"probabilities": probs,
                "labels": tf.argmax(probs, axis=-1, output_type=tf.int32)}


def resample(images: tf.Tensor, spec: InputSpec, fov: Optional[tf.Tensor] = None):
    """Raw images [B, H, W, C] (and `fov` [B, H, W]) at the scale training saw: the
    spec's fixed size, its resampling factor, or as they are."""
    if spec.input_size:
        size = tf.constant(spec.input_size, tf.int32)
    elif spec.scale and spec.scale != 1:
        size = tf.cast(tf.maximum(tf.round(tf.cast(tf.shape(images)[1:3], tf.float32)
                                           * spec.scale), 1.0), tf.int32)
    else:
        return images, fov
    images = tf.image.resize(images, size, antialias=True)
    if fov is not None:
        fov = tf.image.resize(tf.cast(fov, tf.float32)[..., None], size,
                              "nearest")[..., 0]
    return images, fov


def probabilities(model: tf.Module, images: tf.Tensor, spec: InputSpec,
                  fov: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Raw images [B, H, W, C] -> probabilities [B, H, W, K] as training saw them, in
    the spec's inference mode; `fov` [B, H, W] only for a spec that standardises over
    it."""
    size = tf.shape(images)[1:3]
    x, fov = resample(images, spec, fov)
    x = preprocess.apply(spec.for_model(model.cfg).preprocessing, x, fov)
    if spec.mode == "sliding_window":
        probs = sliding_window.predict(lambda t: network.probabilities(model, t), x,
                                       spec.window, spec.overlap)
    else:
        probs = network.probabilities(model, x)
    if spec.input_size or (spec.scale and spec.scale != 1):
        probs = tf.image.resize(probs, size)
    return probs


def save(model: tf.Module, path: str, exp: Optional[config_lib.Experiment] = None) -> str:
    """Writes the SavedModel to a temporary folder, then swaps it in: never half-written.

    `exp` (the training configuration, with its chosen threshold) gives the input
    contract; None means no resize, no contrast and threshold 0.5.
    """
    spec = (InputSpec.of(exp) if exp else InputSpec()).for_model(model.cfg)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    exported = Exported(model, spec)
    tf.saved_model.save(exported, tmp, signatures={"serving_default": exported.serve})
    with open(os.path.join(tmp, "r2u_model.json"), "w") as f:
        # "contrast" repeats the spec's for readers of the layout before it.
        json.dump({"model": model.cfg.__dict__, **dataclasses.asdict(spec),
                   "contrast": spec.contrast}, f, indent=2)
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=".old-export-", dir=parent)
        os.replace(path, os.path.join(old, "export"))
    os.replace(tmp, path)
    if old:
        shutil.rmtree(old)
    return path
