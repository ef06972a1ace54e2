"""Adam as a `tf.Module` with its slots created up front, and dynamic loss scaling.

Slots exist before the first step, so a checkpoint restores into a fresh optimizer and a
compiled (XLA) step never has to create variables. All state is float32 and, like the
model's weights, updated identically on every replica.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

_REPLICATED = tf.VariableAggregation.ONLY_FIRST_REPLICA


def _state(value, name, dtype=tf.float32):
    return tf.Variable(value, name=name, dtype=dtype, trainable=False,
                       aggregation=_REPLICATED)


class Adam(tf.Module):
    """Adam (Kingma & Ba, 2015) with bias correction; the report trains with lr 1e-3."""

    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float = 1e-3,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7,
                 name: str = "adam"):
        super().__init__(name=name)
        if learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        with self.name_scope:
            self.learning_rate = _state(learning_rate, "learning_rate")
            self.iterations = _state(0, "iterations", tf.int64)
            self.m = [_state(tf.zeros_like(v), f"m_{i}") for i, v in enumerate(variables)]
            self.v = [_state(tf.zeros_like(v), f"v_{i}") for i, v in enumerate(variables)]

    def apply(self, grads: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        if len(grads) != len(self.m):
            raise ValueError(f"got {len(grads)} gradients for {len(self.m)} slots")
        step = tf.cast(self.iterations.assign_add(1), tf.float32)
        lr = self.learning_rate * tf.sqrt(1.0 - self.beta_2**step) / (1.0 - self.beta_1**step)
        for g, var, m, v in zip(grads, variables, self.m, self.v):
            g = tf.cast(g, tf.float32)
            m.assign_add((g - m) * (1.0 - self.beta_1))
            v.assign_add((tf.square(g) - v) * (1.0 - self.beta_2))
            var.assign_sub(lr * m / (tf.sqrt(v) + self.epsilon))


class LossScale(tf.Module):
    """Dynamic loss scaling for float16: halve on overflow, double after `period` good steps."""

    def __init__(self, initial: float = 2.0**15, period: int = 2000, name: str = "loss_scale"):
        super().__init__(name=name)
        self.period = period
        with self.name_scope:
            self.scale = _state(initial, "scale")
            self.good_steps = _state(0, "good_steps", tf.int64)

    def update(self, finite: tf.Tensor) -> None:
        """Record whether this step's gradients were all finite."""
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.period)
        self.scale.assign(tf.where(grow, self.scale * 2.0,
                                   tf.where(finite, self.scale,
                                            tf.maximum(self.scale / 2.0, 1.0))))
        self.good_steps.assign(tf.where(tf.logical_and(finite, tf.logical_not(grow)),
                                        self.good_steps + 1, tf.zeros_like(self.good_steps)))


def learning_rate(step: tf.Tensor, base: float, schedule: str, warmup_steps: int,
                  total_steps) -> tf.Tensor:
    """The step size of step `step` (0-based) of `total_steps`.

    Linear warm-up from base / warmup_steps to base over `warmup_steps`, then
    "constant", "cosine" (half a cosine from base to 0 over the remaining steps) or
    "step" (x0.1 at 50% and again at 75% of the run). A decaying rate lets the
    weights, and the batch-norm moving averages that trail them, settle at the end.
    """
    if schedule not in ("constant", "cosine", "step"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    step = tf.cast(step, tf.float32)
    warm = tf.minimum(1.0, (step + 1.0) / max(1, warmup_steps))
    # `total_steps` may be a variable: a run behind its time budget ends sooner.
    span = tf.maximum(1.0, tf.cast(total_steps, tf.float32) - warmup_steps)
    progress = tf.clip_by_value((step - warmup_steps) / span, 0.0, 1.0)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + tf.cos(np.pi * progress))
    elif schedule == "step":
        decay = tf.where(progress >= 0.75, 0.01, tf.where(progress >= 0.5, 0.1, 1.0))
    else:
        decay = tf.constant(1.0)
    return base * warm * decay


def all_finite(grads: Sequence[tf.Tensor]) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
