"""Steps from a wall-time budget: `--max_minutes=N` without `--steps`.

The plan (`r2u.data.plan`) fixes what a step holds; how many steps fit in N minutes
depends on the machine. `fit` measures it: it builds the run's model and input
pipeline, compiles the step, times steps and a validation pass, and sets the steps so
that the whole schedule (warm-up, decay to zero at the last step, `plan.VALIDATIONS`
validations, the choice of the inference mode and the export) ends by the deadline.
The cosine schedule then ends where the budget does, instead of being cut mid-decay
(a cut run keeps a high learning rate and unsettled batch-norm statistics).
"""

import dataclasses
import math
import time
from typing import Callable, Dict, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from r2u import config as config_lib
from r2u.data import plan as plan_lib
from r2u.data import prepared
from r2u.inference import network
from r2u.nn import models
from r2u.training import epochs
from r2u.training import inputs
from r2u.training import losses
from r2u.training import step as step_lib

MIN_SECONDS = 8.0   # timed steps: at least this long ...
MAX_STEPS = 40      # ... or this many, after the compiling step and one more
SAFETY = 0.93       # the machine's speed drifts (other load, thermal): keep a margin
WARMUP = 100        # warm-up steps, at most a tenth of the run
VALIDATION_SHARE = 0.15  # validations take at most this share of the budget ...
MIN_VALIDATIONS = 3      # ... but at least this many give a checkpoint to choose
SLIDING_COST = 4.0  # a sliding-window pass costs about 4 whole-image passes in float32
#                     (window 64, overlap 0.5: benchmarks/results/sliding-window-cost.json;
#                     7 in bfloat16, where the SAFETY margin and replanning must absorb it)


def fit(exp: config_lib.Experiment, data: prepared.PreparedData, deadline: float,
        clock: Callable[[], float] = time.time
        ) -> Tuple[config_lib.Experiment, Dict]:
    """`exp` with `train.steps`, `steps_per_epoch` and `warmup_steps` set so the run
    ends by `deadline` (a `clock()` time); and the measurements behind them.

    Raises:
      ValueError: when the budget cannot hold even a short run (naming the times).
    """
    measured = measure(exp, data)
    left = deadline - clock()
    validation = measured["validation_seconds"]
    validations = int(np.clip(VALIDATION_SHARE * left / max(validation, 1e-6),
                              MIN_VALIDATIONS, plan_lib.VALIDATIONS))
    # After training: the inference modes on validation images at their own size,
    # and the export; before it, the real run compiles its step again.
    end = validation * _native_pixels(exp, data) * (
        1 + (SLIDING_COST if exp.inference.window else 0))
    fixed = 2 * measured["compile_seconds"] + validations * validation + end
    steps = int(SAFETY * (left - fixed) / measured["step_seconds"])
    if steps < 2 * validations:
        raise ValueError(
            f"the time budget leaves {left:.0f} s, of which {fixed:.0f} s go to "
            f"compiling, validating and exporting and {measured['step_seconds']:.2f} s "
            f"to each step: too few steps; give more --max_minutes")
    per_epoch = math.ceil(steps / validations)
    steps = per_epoch * validations
    train = dataclasses.replace(exp.train, steps=steps, steps_per_epoch=per_epoch,
                                warmup_steps=min(WARMUP, steps // 10))
    measured.update(seconds_left=left, steps=steps, steps_per_epoch=per_epoch,
                    validations=validations, end_seconds=end, deadline=deadline,
                    after_validations=(measured["compile_seconds"] + end) / validation)
    logging.info("budget: %.2f s per step, %.1f s per validation, %.0f s left: %d steps, "
                 "%d validations", measured["step_seconds"], validation, left, steps,
                 validations)
    return dataclasses.replace(exp, train=train), measured


def replanned(done: int, total: int, per_epoch: int, step_seconds: float,
              validation_seconds: float, seconds_left: float,
              after_validations: float) -> int:
    """The last step of a run at `done` that must end within `seconds_left`: `total`,
    or fewer when the steps and validations left no longer fit (never more).

    `after_validations` is what the run does after its last step (the choice of the
    inference mode, the export), in validation passes: it slows down with them.
    """
    validations = -(-(total - done) // per_epoch) + after_validations
    fits = int((SAFETY * seconds_left - validations * validation_seconds) / step_seconds)
    return max(done + 1, min(total, done + fits))


def _native_pixels(exp: config_lib.Experiment, data: prepared.PreparedData) -> float:
    """How many times more pixels the images have than training resamples them to."""
    if exp.data.scale:
        return 1.0 / exp.data.scale**2
    size = exp.data.image_size
    if not size or data.name != "folder":  # named datasets are resized at preparation
        return 1.0
    size = (size, size) if isinstance(size, int) else size
    height, width = data.fingerprint()["median_size"]
    return height * width / float(size[0] * size[1])


def measure(exp: config_lib.Experiment, data: prepared.PreparedData) -> Dict:
    """Seconds to compile a step, per step, and per validation pass of this run."""
    state = step_lib.make_state(exp)
    loss_fn = losses.loss_fn(exp.train.loss,
                             inputs.class_weights(exp.train.class_weights, data))
    step = step_lib.make_train_step(state, loss_fn, exp.train.clip_norm, False)
    batches = iter(inputs.training_dataset(data, exp, tf.distribute.InputContext(),
                                           0))
    start = time.perf_counter()
    _sync(step(next(batches)))
    compile_seconds = time.perf_counter() - start
    _sync(step(next(batches)))  # the first plain step still warms caches
    times = []
    while len(times) < MAX_STEPS and sum(times) < MIN_SECONDS:
        start = time.perf_counter()
        _sync(step(next(batches)))
        times.append(time.perf_counter() - start)
    return {"compile_seconds": compile_seconds,
            "step_seconds": float(np.median(times)), "timed_steps": len(times),
            "validation_seconds": _validation_seconds(exp, data)}


def _validation_seconds(exp: config_lib.Experiment, data: prepared.PreparedData,
                        sample: int = 4) -> float:
    """One validation pass, from timing `sample` images (after one to compile)."""
    model = models.build(exp.model)
    predict = network.network_fn(model)
    images = data.dataset("validation", batch_size=1, training=False,
                          preprocessing=exp.preprocessing, cache=False,
                          **epochs.evaluation_resampling(exp))
    times = []
    for i, example in enumerate(images.take(sample + 1)):
        start = time.perf_counter()
        predict(example["image"]).numpy()
        if i:
            times.append(time.perf_counter() - start)
    per_image = float(np.mean(times)) if times else 0.0
    # Scoring (every threshold of a binary model) adds about a third.
    return 1.3 * per_image * data.split("validation").num_examples


def _sync(out: Dict) -> None:
    """Waits for the step: its loss is fetched to the host."""
    float(out["loss"])
