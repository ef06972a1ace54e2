"""Loads a trained model for inference, from a checkpoint or from the SavedModel alone.

`load(path)` accepts a training folder (`config.json` plus `best/` or `ckpt/`, as
written by `r2u.training.loop.train`), a training folder holding only `export/`, or a SavedModel
folder itself. Either way it returns a `Predictor` whose `predict` maps raw float32
images [B, H, W, C] to class probabilities [B, H, W, K], with the preprocessing of
training:

    predictor = checkpoints.load("runs/drive-r2unet")
    probs = predictor.predict(images)         # whole images, padded and cropped back
    probs = predictor.predict_image(image, tile=512, stride=256)   # one large image

Security: restoring a checkpoint rebuilds the model from `config.json`, and loading a
SavedModel runs the TensorFlow graph it contains. Load only model folders you trust.
"""

import dataclasses
import json
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from r2u import config as config_lib
from r2u.inference import export
from r2u.inference import network
from r2u.nn import models
from r2u.data import preprocess

SOURCES = ("auto", "checkpoint", "saved_model")


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A trained network and its input contract.

    Attributes:
      predict: raw float32 [B, H, W, C] -> float32 probabilities [B, H, W, K]; images
        go through `spec` (input scale, channels, optional contrast, standardisation),
        are padded to a multiple of 2**depth and cropped back. For a SavedModel it is
        its `serve`. A model standardised over the field of view takes `(images, fov)`
        with a float32 [B, H, W] fov.
      network: preprocessed float32 [B, h, w, C] -> probabilities [B, h, w, K] (any
        size); tiled inference runs it on tiles of the whole preprocessed image.
      model_cfg: the network's configuration.
      spec: the input contract and the operating point (`export.InputSpec`).
      source: "checkpoint" or "saved_model".
      path: the checkpoint prefix or the SavedModel folder that was loaded.
      experiment: the training configuration (`config.json`), if the folder has one.
      step: the training step of the checkpoint, if known.
      owner: keeps alive the object that owns the variables `predict` uses (a loaded
        SavedModel's functions fail once their root object is collected).
    """
    predict: Callable
    network: Callable
    model_cfg: config_lib.ModelConfig
    spec: export.InputSpec
    source: str
    path: str
    experiment: Optional[config_lib.Experiment] = None
    step: Optional[int] = None
    owner: object = dataclasses.field(default=None, repr=False, compare=False)
    model: Optional[tf.Module] = dataclasses.field(default=None, repr=False,
                                                   compare=False)

    @property
    def threshold(self) -> float:
        """The operating point chosen on validation images (0.5 if none was)."""
        return self.spec.threshold

    def preprocess(self, images, fov=None) -> tf.Tensor:
        """Raw [B, H, W, C] images -> the network's standardised input (training size);
        `fov` [B, H, W] is needed by models standardised over it (`spec.needs_fov`)."""
        x = to_model_channels(images, self.model_cfg.in_channels)
        x, fov = export.resample(x, self.spec, fov)
        return preprocess.apply(self.spec.preprocessing, x, fov)

    def predict_image(self, image, tile: int = 0, stride: int = 0,
                      fov=None) -> np.ndarray:
        """Probabilities [H, W, K] of one raw image [H, W, C] (any C in {1, 3}).

        Args:
          image: uint8 pixels, or floats in [0, 1] (any scale works: the image is
            standardised, but [0, 1] matches training exactly).
          tile: 0 predicts the image whole; otherwise overlapping `tile` x `tile`
            windows of the image, preprocessed whole, are predicted and their
            probabilities averaged (bounded memory for very large images). A multiple
            of 2**depth.
          stride: offset between tiles; 0 means tile // 2.
          fov: [H, W] field of view (nonzero inside); used only by a model
            standardised over it, which needs it.
        """
        multiple = 2**self.model_cfg.depth
        if tile < 0 or tile % multiple or stride < 0:
            raise ValueError(f"tile must be 0 or a positive multiple of 2**depth = "
                             f"{multiple} and stride >= 0, got {tile} and {stride}")
        image = np.asarray(image)
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        height, width = image.shape[:2]
        x = to_model_channels(image[None].astype(np.float32), self.model_cfg.in_channels)
        fov = (np.asarray(fov, np.float32)[None] if fov is not None and self.spec.needs_fov
               else None)
        if tile:
            stride = stride or max(1, tile // 2)
            pre = self.preprocess(x, fov)[0].numpy()
            probs = network.tiled_probabilities(self.network, pre, tile, stride)
            if probs.shape[:2] != (height, width):
                probs = tf.image.resize(probs, (height, width)).numpy()
        else:
            out = self.predict(x) if fov is None else self.predict(x, fov)
            probs = out[0].numpy()
        if np.isnan(probs).any():
            raise ValueError("the model produced NaN probabilities")
        return probs[:height, :width]

    def with_inference(self, mode: str, window: Optional[int] = None,
                       overlap: float = 0.5,
                       threshold: Optional[float] = None) -> "Predictor":
        """This model predicting in another mode ("whole" or "sliding_window" with
        `window` and `overlap`) or at another threshold, as its export would."""
        if mode not in config_lib.INFERENCE_MODES:
            raise ValueError(f"inference mode must be one of "
                             f"{config_lib.INFERENCE_MODES}, got {mode!r}")
        multiple = 2**self.model_cfg.depth
        if mode == "sliding_window" and (not window or window % multiple):
            raise ValueError(f"sliding windows need a window that is a positive "
                             f"multiple of 2**depth = {multiple}, got {window}")
        spec = dataclasses.replace(
            self.spec, mode=mode, window=window if mode == "sliding_window" else None,
            overlap=overlap,
            threshold=self.spec.threshold if threshold is None else threshold)
        serve = export.Exported(self.model, spec).serve
        return dataclasses.replace(self, predict=_probabilities(serve, spec), spec=spec)

    def info(self) -> dict:
        """A JSON-friendly description of what was loaded."""
        return {"source": self.source, "path": self.path, "step": self.step,
                "model": dataclasses.asdict(self.model_cfg),
                "input": dataclasses.asdict(self.spec),
                "experiment": (dataclasses.asdict(self.experiment)
                               if self.experiment else None)}


def to_model_channels(images, channels: int) -> tf.Tensor:
    """float32 [B, H, W, 1 | 3] -> [B, H, W, channels] (gray <-> RGB as in training)."""
    return preprocess.to_channels(tf.cast(tf.convert_to_tensor(images), tf.float32),
                                  channels)


def load(path: str, source: str = "auto") -> Predictor:
    """Loads the model in `path` (see the module docstring). Load only trusted folders.

    Args:
      path: a training folder or a SavedModel folder.
      source: "auto" prefers a checkpoint (`best/`, else the latest in `ckpt/`) and
        falls back to the SavedModel; "checkpoint" or "saved_model" force one.

    Returns:
      The `Predictor`.

    Raises:
      FileNotFoundError: naming the folder when it holds neither kind of model.
      ValueError: unknown `source`, or a SavedModel not written by `r2u.inference.export`.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: model folder not found")
    experiment = _read_experiment(path)
    prefix = _checkpoint_prefix(path)
    saved = _saved_model_dir(path)
    if source != "saved_model" and prefix and experiment:
        return _from_checkpoint(prefix, experiment)
    if source != "checkpoint" and saved:
        return _from_saved_model(saved, experiment)
    wanted = {"auto": "a checkpoint or a SavedModel", "checkpoint": "a checkpoint",
              "saved_model": "a SavedModel"}[source]
    hint = (" (it has checkpoints but no config.json to rebuild the model)"
            if prefix and not experiment else "")
    raise FileNotFoundError(
        f"{path}: no model found{hint}; expected {wanted}: config.json with "
        f"best/ or ckpt/ checkpoints, export/saved_model.pb, or saved_model.pb")


def _read_experiment(path: str) -> Optional[config_lib.Experiment]:
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            return config_lib.Experiment.from_dict(json.load(f))
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{config_path}: not a valid experiment config ({e})") from e


def _checkpoint_prefix(path: str) -> Optional[str]:
    for sub in ("best", "ckpt"):
        folder = os.path.join(path, sub)
        if os.path.isdir(folder):
            prefix = tf.train.latest_checkpoint(folder)
            if prefix:
                return prefix
    return None


def _saved_model_dir(path: str) -> Optional[str]:
    for folder in (path, os.path.join(path, "export")):
        if os.path.isfile(os.path.join(folder, "saved_model.pb")):
            return folder
    return None


def _from_checkpoint(prefix: str, experiment: config_lib.Experiment) -> Predictor:
    model = models.build(experiment.model)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    _restore(tf.train.Checkpoint(model=model, step=step), prefix, "config.json")
    logging.info("restored %s (step %d)", prefix, int(step))
    spec = export.InputSpec.of(experiment).for_model(experiment.model)
    # The very function that export.save serialises: both sources behave alike.
    serve = export.Exported(model, spec).serve
    return Predictor(predict=_probabilities(serve, spec),
                     network=network.network_fn(model),
                     model_cfg=experiment.model, spec=spec, source="checkpoint",
                     path=prefix, experiment=experiment, step=int(step), model=model)


def _from_saved_model(folder: str, experiment) -> Predictor:
    info_path = os.path.join(folder, "r2u_model.json")
    if not os.path.isfile(info_path):
        raise ValueError(f"{folder}: SavedModel without r2u_model.json: not written by "
                         "r2u.inference.export.save")
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    model_cfg = config_lib.model_config(info["model"])
    loaded = tf.saved_model.load(folder)
    # The serving graph takes raw whole images. Tiled inference needs the bare network
    # on preprocessed tiles, so rebuild it and read the SavedModel's own variables.
    model = models.build(model_cfg)
    _restore(tf.train.Checkpoint(model=model),
             os.path.join(folder, "variables", "variables"), info_path)
    logging.info("loaded SavedModel %s", folder)
    spec = export.InputSpec.from_info(info)
    return Predictor(predict=_probabilities(loaded.serve, spec),
                     network=network.network_fn(model),
                     model_cfg=model_cfg, spec=spec, source="saved_model", path=folder,
                     experiment=experiment, owner=loaded, model=model)


def _probabilities(serve: Callable, spec: export.InputSpec) -> Callable:
    """The probabilities of `serve`'s outputs (a plain tensor in exports written before
    the named outputs); `fov` is passed only to a model standardised over it."""
    def predict(images, fov=None):
        if spec.needs_fov and fov is None:
            raise ValueError("this model standardises images over their field of "
                             "view: give the field of view (fov)")
        out = serve(images, fov) if spec.needs_fov else serve(images)
        return out["probabilities"] if isinstance(out, dict) else out
    return predict


def _restore(checkpoint: tf.train.Checkpoint, prefix: str, described_by: str) -> None:
    """Reads `prefix` into `checkpoint`; every model variable must be in the file."""
    try:
        # The optimizer slots of a training checkpoint are not needed: expect_partial.
        checkpoint.read(prefix).assert_existing_objects_matched().expect_partial()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"{prefix}: does not match the model described by "
                         f"{described_by} ({' '.join(str(e).split())[:300]})") from e

