"""The training plan: written rules from a dataset's fingerprint to an `Experiment`.

As nnU-Net turns its dataset fingerprint into a plan by rules (target spacing and patch
size from the median shape, normalisation per modality, batch size from memory), r2u
turns `r2u.data.fingerprint` into the fields below, each with the reason it holds for
any dataset, not only the ones it was tried on. Where nnU-Net budgets GPU memory and a
fixed number of epochs, r2u budgets wall time on the CPU it runs on: the number of
steps is not set here but measured (`r2u.training.budget`) from the step time of the
planned batch, so the whole schedule ends inside `--max_minutes`.

    plan = plan.make(fingerprint, classes, channels)    # {field: {"value", "why"}}
    exp = plan.apply(plan, exp)                         # then flags override

Each field is a dotted `Experiment` path ("data.scale"). `plan.json` in the model
folder records the plan, what overrode it (flags, a named preset) and the result.
"""

import dataclasses
import math
import re
from typing import Dict, Optional, Sequence

from r2u import config as config_lib

# Model input sizes are multiples of 2**depth; the default depth is 4.
MULTIPLE = 16
# An elongated structure (vessel, duct, fibre) is mostly width: keep its median width
# >= 2 px, two samples across (Nyquist), so members half as wide still span a pixel.
# Downscaling below that erases the thin members the metric counts most.
ELONGATED_WIDTH = 2.0
# A compact structure (lesion, organ, nerve) is scored by its boundary: a boundary
# error of e px costs about 2e/D of Dice on a structure D px wide, so D >= 32 px keeps a
# half-pixel error under ~3%. Larger structures may be downscaled to that width.
COMPACT_WIDTH = 32.0
# A class whose components are this many times longer than wide is elongated.
ELONGATION = 10.0
# Patches see each structure with its own width of context on both sides, twice.
CONTEXT = 4.0
# ... and are at least 4 * 2**depth: a smaller patch leaves the 3x3 convolutions of
# the bottleneck (stride 16) a 3x3 map or less, mostly padding.
MIN_PATCH = 4 * MULTIPLE
# A patch that covers most of the image might as well be the image.
WHOLE_IMAGE = 0.75
# Batch norm estimates statistics per batch: fewer than 8 samples make them noisy.
MIN_BATCH = 8
MAX_BATCH = 64
# Pixels per step when patches are small: the step time grows with them.
PIXELS_PER_STEP = 2**16
# Sizes of one dataset varying by more than this are not one frame.
SIZE_SPREAD = 1.25
# A fitted slope of log width on log image side above this: structures scale with
# the frame (photographs at different resolutions), so images are resized to one size.
FRAME_SLOPE = 0.5
# Local contrast normalisation for thin structures: uneven illumination over the
# image drowns low-contrast thin structures, which standardising the whole image
# cannot undo (+0.018 DRIVE F1 measured, docs/recipe.md).
THIN_FOR_CONTRAST = 6.0
# Pixels outside the field of view (ignore label) beyond this share: standardise
# over the field of view, else a black rim sets the statistics; but only when
# inference, which has no labels, can find that field of view in the image
# (fingerprint `fov_from_image`, in this share of the cases). An ignore label that
# marks unannotated pixels (nnU-Net's use) leaves whole images standardised.
FOV_FOR_STANDARDIZE = 0.98
FOV_FROM_IMAGE = 0.9
# Validations per run: enough to pick a checkpoint, few enough to cost little time.
VALIDATIONS = 10
SIDED = re.compile(r"(^|[^a-z])(left|right|l|r|sinister|dexter)([^a-z]|$)", re.I)


def _field(value, why: str) -> Dict:
    return {"value": value, "why": why}


def _classes(fingerprint: Dict, names: Sequence[str]) -> Dict[str, Dict]:
    """The measured foreground classes: {name: {width, p90, elongated}}."""
    found = {}
    for name in names[1:]:
        entry = fingerprint["classes"].get(name, {})
        width = (entry.get("width") or {}).get("median")
        if not width:
            continue
        area = (entry.get("component_area") or {}).get("median") or 0.0
        found[name] = {"width": width, "p90": entry["width"].get("p90") or width,
                       "elongated": area / width**2 > ELONGATION}
    return found


def _scale(found: Dict[str, Dict]) -> Dict:
    """The resampling factor: as small as the most demanding class allows, never up."""
    if not found:
        return _field(1.0, "no foreground structure was measured: native resolution")
    needs = {name: (ELONGATED_WIDTH if c["elongated"] else COMPACT_WIDTH) / c["width"]
             for name, c in found.items()}
    name = max(needs, key=needs.get)
    scale = min(1.0, needs[name])
    kind = "elongated" if found[name]["elongated"] else "compact"
    floor = ELONGATED_WIDTH if found[name]["elongated"] else COMPACT_WIDTH
    return _field(round(scale, 3), (
        f"{name} ({kind}, median width {found[name]['width']:.1f} px) sets the scale: "
        f"kept >= {floor:g} px wide; never upsampled (it adds no information)"))


def _frame(fingerprint: Dict) -> bool:
    """Whether images are best brought to one size (see `FRAME_SLOPE`)."""
    low, high = fingerprint["min_size"], fingerprint["max_size"]
    spread = max(high[0] / max(low[0], 1), high[1] / max(low[1], 1))
    if spread <= SIZE_SPREAD:
        return True  # one frame: images of other sizes are brought to it
    slope = fingerprint.get("slope_width_vs_size")
    return slope is not None and slope > FRAME_SLOPE


def _round(value: float, multiple: int = MULTIPLE) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def make(fingerprint: Dict, classes: Sequence[str], channels: int) -> Dict[str, Dict]:
    """The plan of a dataset from its training fingerprint: {field: {value, why}}."""
    plan = {
        "model.in_channels": _field(channels, "the images' channels"),
        "model.num_classes": _field(len(classes), "the label map's classes"),
        "data.classes": _field(list(classes), "the label map's class names"),
    }
    found = _classes(fingerprint, classes)
    plan.update(_geometry(fingerprint, found))
    plan.update(_recipe(fingerprint, found, classes))
    return plan


def _geometry(fingerprint: Dict, found: Dict[str, Dict]) -> Dict[str, Dict]:
    """Training scale, whole images or patches, batch size and the inference window."""
    scale = _scale(found)
    s = scale["value"]
    height, width = (v * s for v in fingerprint["median_size"])
    smallest = min(fingerprint["min_size"]) * s
    widest = max((c["p90"] for c in found.values()), default=0.0) * s
    patch = max(MIN_PATCH, _round(CONTEXT * widest))
    # Whole images when a patch would cover most of the image or not fit in the
    # smallest one; they are batched, so they share one size, a multiple of 2**depth.
    whole = patch >= WHOLE_IMAGE * min(height, width) or patch > smallest
    same = fingerprint["min_size"] == fingerprint["max_size"]
    out = {}
    if whole:
        size = [_round(height), _round(width)]
        native = same and size == list(fingerprint["median_size"])
        out["data.image_size"] = _field(None if native else size, (
            f"whole images (sizes {fingerprint['min_size']} to "
            f"{fingerprint['max_size']}) are batched at one size: the median x {s:g}, "
            f"in multiples of {MULTIPLE}; {scale['why']}"))
        out["data.scale"] = _field(None, "images are resized to one size instead")
        out["data.patch_size"] = _field(None, (
            f"a patch of {CONTEXT:g} x the widest structure ({widest:.0f} px) would "
            f"cover most of the {min(height, width):.0f}-px image: whole images"))
        pixels = size[0] * size[1]
    else:
        out.update(_patch_scale(fingerprint, scale, same, height, width))
        patch = min(patch, int(smallest) // MULTIPLE * MULTIPLE)
        out["data.patch_size"] = _field(patch, (
            f"{CONTEXT:g} x the p90 width of the widest class ({widest:.1f} px at "
            f"training scale), at least {MIN_PATCH} px (the bottleneck's 3x3 "
            f"convolutions need a 4x4 map), at most the smallest image"))
        pixels = patch * patch
        out["data.patches_per_image"] = _field(
            int(min(64, max(4, round(height * width / pixels)))),
            "about one cover of each image per visit, cut from one decoded and "
            "augmented image")
        out["inference.window"] = _field(patch, (
            "the sliding window tried against whole images on validation after "
            "training: the training patch"))
    batch = int(min(MAX_BATCH, max(MIN_BATCH, PIXELS_PER_STEP // pixels)))
    out["train.batch_size"] = _field(batch, (
        f"{PIXELS_PER_STEP} pixels per step (the step time grows with them), at least "
        f"{MIN_BATCH} samples for batch-norm statistics"))
    return out


def _patch_scale(fingerprint: Dict, scale: Dict, same: bool, height: float,
                 width: float) -> Dict[str, Dict]:
    """How patch-trained images are resampled: one frame is resized to one size,
    images of a fixed pixel spacing are scaled by one factor."""
    s = scale["value"]
    if _frame(fingerprint) and (s < 1 or not same):
        size = [int(round(height)), int(round(width))]
        return {"data.image_size": _field(size, (
                    f"training images share a frame (sizes {fingerprint['min_size']} "
                    f"to {fingerprint['max_size']}): each is resized to the median "
                    f"size x {s:g}; {scale['why']}")),
                "data.scale": _field(None, "images are resized to one size instead")}
    if _frame(fingerprint):
        return {"data.image_size": _field(None, "every image has this size, kept; "
                                          + scale["why"]),
                "data.scale": _field(None, "native resolution")}
    return {"data.image_size": _field(None, "structures keep their pixel size across "
                                      "image sizes: images are resampled, not resized"),
            "data.scale": _field(None if s == 1 else s, scale["why"])}


def _recipe(fingerprint: Dict, found: Dict[str, Dict], classes) -> Dict[str, Dict]:
    """Normalisation, loss, augmentation, schedule and the headline metric."""
    out = {}
    fov = fingerprint.get("fov_fraction", 1.0)
    shown = fingerprint.get("fov_from_image") or 0.0
    in_fov = fov < FOV_FOR_STANDARDIZE and shown >= FOV_FROM_IMAGE
    why = f"{1 - fov:.1%} of pixels are outside the field of view (ignore label)"
    if fov < FOV_FOR_STANDARDIZE:
        why += (f", which the image shows in {shown:.0%} of the cases: "
                + ("standardise over the field of view only" if in_fov else
                   "standardise whole images (inference has no labels to find it)"))
    else:
        why += ": standardise whole images"
    out["preprocessing.standardize_in_fov"] = _field(in_fov, why)
    thinnest = min((c["width"] for c in found.values()), default=math.inf)
    scale = _scale(found)["value"]
    contrast = thinnest * scale <= THIN_FOR_CONTRAST
    out["preprocessing.contrast"] = _field(contrast, (
        f"the thinnest class is {thinnest * scale:.1f} px wide at training scale: "
        + ("local contrast normalisation for thin low-contrast structures" if contrast
           else f"wider than {THIN_FOR_CONTRAST:g} px, no local contrast step")))
    out["train.loss"] = _field("ce+dice", (
        "cross-entropy for calibrated probabilities plus soft Dice over the foreground "
        "classes against class imbalance (nnU-Net's default; beat weighted CE on "
        "ISIC, docs/results.md)"))
    out["train.class_weights"] = _field("none", "the Dice term balances the classes")
    sided = [name for name in classes if SIDED.search(name)]
    out["data.flip_left_right"] = _field(not sided, (
        f"classes {sided} name a side: a mirror image would swap them" if sided else
        "no class names a side: mirror images are valid examples"))
    out["train.lr_schedule"] = _field("cosine", (
        "warm-up then cosine decay to zero at the planned last step: the weights and "
        "batch-norm statistics settle (constant rate: -0.071 ISIC Jaccard)"))
    out["data.headline"] = _field(
        "pooled_f1" if len(classes) == 2 else "mean_dice",
        "pooled Dice over the foreground (mean over classes): every structure pixel "
        "counts once, defined even where a class is absent from an image")
    return out


def apply(plan: Dict[str, Dict], exp: config_lib.Experiment) -> config_lib.Experiment:
    """`exp` with every planned field set (then flags may override them)."""
    parts = {}
    for field, entry in plan.items():
        part, name = field.split(".")
        value = entry["value"]
        if isinstance(value, list) and name in ("classes", "image_size"):
            value = tuple(value)
        parts.setdefault(part, {})[name] = value
    changes = {part: dataclasses.replace(getattr(exp, part), **fields)
               for part, fields in parts.items()}
    if "model" in changes and "preprocessing" in parts:
        changes["preprocessing"] = dataclasses.replace(
            changes["preprocessing"], channels=changes["model"].in_channels)
    elif "model" in changes:
        changes["preprocessing"] = dataclasses.replace(
            exp.preprocessing, channels=changes["model"].in_channels)
    return dataclasses.replace(exp, **changes)


def differences(plan: Dict[str, Dict], exp: config_lib.Experiment) -> Dict[str, object]:
    """{field: value} where `exp` (after presets and flags) differs from `plan`."""
    out = {}
    for field, entry in plan.items():
        part, name = field.split(".")
        value = getattr(getattr(exp, part), name)
        planned = entry["value"]
        if isinstance(value, tuple):
            value = list(value)
        if value != planned:
            out[field] = value
    return out


def describe(plan: Dict[str, Dict], overridden: Optional[Dict] = None) -> str:
    """The plan as lines `field = value  (why)`, overridden fields marked."""
    overridden = overridden or {}
    lines = []
    for field, entry in plan.items():
        if field in overridden:
            lines.append(f"{field} = {overridden[field]!r}  (overridden; the plan said "
                         f"{entry['value']!r}: {entry['why']})")
        else:
            lines.append(f"{field} = {entry['value']!r}  ({entry['why']})")
    return "\n".join(lines)
