"""Frozen experiment configuration and the per-dataset presets of the source report.

Every run is described by one `Experiment`; `bin/train` picks a preset, overrides fields
from flags with `dataclasses.replace`, and writes the result to `config.json`.
"""

import dataclasses
import json
from typing import Optional, Tuple

ARCHS = ("unet", "resunet", "runet", "r2unet", "attr2unet")
DTYPES = ("float32", "bfloat16", "float16")
RECURRENCES = ("shared", "paper")
RECURRENT_BN = ("shared", "per_step")
LR_SCHEDULES = ("constant", "cosine", "step")
# Binary datasets pick the checkpoint and the threshold by pooled F1 or per-image
# Jaccard; K-class ones by the mean over foreground classes of the pooled Dice (argmax).
HEADLINES = ("pooled_f1", "per_image_jaccard", "mean_dice")
INFERENCE_MODES = ("whole", "sliding_window")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network: which block, how wide, how deep, in which compute dtype."""
    arch: str = "r2unet"
    in_channels: int = 1
    num_classes: int = 2
    filters: int = 16          # width of the first level; doubles per level
    depth: int = 4             # number of 2x2 poolings; H, W must divide 2**depth
    t: int = 2                 # recurrent steps: t=2 applies the shared conv 3 times
    recurrence: str = "shared"  # "shared" (report) or "paper" (separate W_f, W_r)
    dropout: float = 0.1       # after every block
    # Moving batch-norm statistics of the recurrent units: one set per recurrent step
    # ("per_step", the recipe: +0.03 DRIVE F1 / +0.06 ISIC Jaccard, docs/results.md) or
    # one set shared by the steps ("shared", the paper's form).
    recurrent_bn: str = "per_step"
    compute_dtype: str = "float32"
    seed: int = 0              # dropout stream and initialisation


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where examples come from and how they are cut."""
    dataset: str = "synthetic"
    data_dir: Optional[str] = None   # raw folder or prepared TFRecords; None: built in
    image_size: Optional[int] = None  # resize at preparation (ISIC: 256), or in the
    #                                   pipeline for folder datasets (plan: whole images)
    scale: Optional[float] = None     # resample every image by this factor (plan)
    patch_size: Optional[int] = None  # random training patches (retina: 48)
    patches_per_image: int = 8
    validation_count: Optional[int] = None  # images held out of train; None: dataset's
    headline: str = "per_image_jaccard"  # picks the checkpoint and the threshold
    augment: bool = True
    flip_left_right: bool = True      # off when classes are sided (plan)
    cache: bool = True
    classes: Tuple[str, ...] = ()     # class names in index order; () = the data's


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What an image goes through before the network (`r2u.data.preprocess.apply`).

    One spec, written to `config.json` and the export's `r2u_model.json`, is what
    training, validation, `bin/evaluate`, `bin/predict` and the SavedModel apply, so
    the network sees the same input everywhere. Images are always standardised per
    image; `standardize_in_fov` takes the statistics over the field of view only (and
    zeroes the outside), which then must be known at inference too.
    """
    channels: Optional[int] = None    # network input channels; None: model.in_channels
    contrast: bool = False            # CLAHE-like contrast + gamma before standardising
    standardize_in_fov: bool = False  # standardisation statistics from FOV pixels only


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How long and how the optimiser runs."""
    steps: Optional[int] = None       # wins over epochs when set
    epochs: int = 10
    steps_per_epoch: Optional[int] = None  # None: one pass over the training split
    batch_size: int = 8
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"     # constant | cosine | step (x0.1 at 50% and 75%)
    warmup_steps: int = 0             # linear warm-up from 0 before the schedule
    loss: str = "wce"                 # wce | dice | wce+dice
    class_weights: str = "auto"       # auto | none | "w0,w1,..." (one per class)
    dtype: str = "auto"               # auto | float32 | bfloat16 | float16
    xla: str = "auto"                 # auto | on | off
    steps_per_call: int = 1           # train steps fused into one host call
    clip_norm: float = 1.0
    log_every: int = 20
    early_stopping: int = 0           # epochs without improvement; 0 = off
    max_minutes: float = 0            # a budget (r2u.training.budget); 0 = off
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """How the trained model predicts: chosen on validation images after training.

    `mode` "whole" runs the network on the whole (resampled, padded) image;
    "sliding_window" on `window`-sized windows overlapping by `overlap`, their
    probabilities weighted by a Gaussian (`r2u.inference.sliding_window`). The
    threshold (binary datasets) is the operating point of that mode.
    """
    threshold: Optional[float] = None  # None until chosen; 0.5 is used meanwhile
    mode: str = "whole"
    window: Optional[int] = None
    overlap: float = 0.5


@dataclasses.dataclass(frozen=True)
class Experiment:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()
    preprocessing: Preprocessing = Preprocessing()

    def __post_init__(self):
        # The spec names the network's input channels: one value, checked here.
        channels = self.preprocessing.channels
        if channels is None:
            object.__setattr__(self, "preprocessing", dataclasses.replace(
                self.preprocessing, channels=self.model.in_channels))
        elif channels != self.model.in_channels:
            raise ValueError(f"preprocessing.channels {channels} != model.in_channels "
                             f"{self.model.in_channels}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Experiment":
        """Reads every `config.json` layout: before the preprocessing spec, `contrast`
        was a field of `data`; before that, `inference` held whole-image inference as
        tile 0 (the only mode since)."""
        data, spec = dict(d["data"]), dict(d.get("preprocessing", {}))
        if "contrast" in data:
            spec.setdefault("contrast", data.pop("contrast"))
        inference = dict(d.get("inference", {}))
        if not inference.get("tile"):
            inference.pop("tile", None)
            inference.pop("stride", None)
        for key in ("classes", "image_size"):
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
        return cls(model=model_config(d["model"]), data=DataConfig(**data),
                   train=TrainConfig(**d["train"]), inference=InferenceConfig(**inference),
                   preprocessing=Preprocessing(**spec))


def model_config(fields: dict) -> ModelConfig:
    """A `ModelConfig` from a written one: configs from before `recurrent_bn` existed
    trained with statistics shared by the recurrent steps, the default then."""
    return ModelConfig(**{"recurrent_bn": "shared", **fields})


def synthetic() -> Experiment:
    """The built-in default: lesion-like blobs, 64x64 RGB, learns in a CPU minute."""
    return Experiment(
            model=ModelConfig(in_channels=3, filters=8, depth=3),
            data=DataConfig(dataset="synthetic"),
            train=TrainConfig(epochs=4, batch_size=16, steps_per_epoch=25))


def synthetic_vessels() -> Experiment:
    """Built-in vessel trees: exercises patches and FOV masks like the retina preset."""
    return Experiment(
            model=ModelConfig(in_channels=1, filters=8, depth=3),
            data=DataConfig(dataset="synthetic_vessels", patch_size=48,
                            headline="pooled_f1"),
            train=TrainConfig(epochs=4, batch_size=16, steps_per_epoch=25))


# Measured on ISIC (README, benchmarks/results/isic-r2unet-*.json): per-step batch-norm
# statistics in the recurrent units. The loss and the warm-up + cosine schedule are the
# recipe of the published results (RECIPES), used by every reported run.
_RECIPE = dict(lr_schedule="cosine", warmup_steps=100)


def isic() -> Experiment:
    """Source report: ISIC 2017 at 256x256 RGB, batch 20, 80 epochs, Adam 1e-3."""
    return Experiment(
            model=ModelConfig(in_channels=3, recurrent_bn="per_step"),
            data=DataConfig(dataset="isic", image_size=256),
            train=TrainConfig(epochs=80, batch_size=20, loss="ce+dice", **_RECIPE))


def retina(dataset: str = "retina") -> Experiment:
    """Source report: pooled retina data, gray, standardised, random 48x48 patches."""
    return Experiment(
            model=ModelConfig(in_channels=1, recurrent_bn="per_step"),
            data=DataConfig(dataset=dataset, patch_size=48, patches_per_image=64,
                            headline="pooled_f1"),
            train=TrainConfig(epochs=50, batch_size=32, loss="ce", **_RECIPE),
            preprocessing=Preprocessing(contrast=True))


def folder() -> Experiment:
    """A user's folder dataset: `r2u.data.plan` derives every field from its
    fingerprint and the time budget; these are only what no plan changes."""
    return Experiment(data=DataConfig(dataset="folder", headline="mean_dice"),
                      train=TrainConfig(loss="ce+dice", **_RECIPE))


# The one list of datasets: r2u.data.prepare prepares exactly these.
PRESETS = {
        "folder": folder,
        "isic": isic,
        "drive": lambda: retina("drive"),
        "stare": lambda: retina("stare"),
        "chase": lambda: retina("chase"),
        "retina": retina,
        "synthetic": synthetic,
        "synthetic_vessels": synthetic_vessels,
}


def preset(dataset: str) -> Experiment:
    if dataset not in PRESETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[dataset]()


def parse_weights(text: str) -> Tuple[float, ...]:
    """'w0,w1[,w2...]' -> (w0, w1, ...): one weight per class, with a clear error."""
    try:
        weights = tuple(float(v) for v in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) < 2:
        raise ValueError(f"expected comma-separated class weights 'w0,w1,...', got "
                         f"{text!r}")
    return weights
