"""The compiled training step: one explicit `tf.GradientTape` step and a loop of them.

`make_train_step` runs the step through the `tf.distribute` strategy (default, mirrored
or multi-worker: see `r2u.training.distribute`) and compiles it with `tf.function` (XLA by
`jit_compile`); `make_train_loop` fuses several steps into one host call. `State` is
everything a checkpoint holds. The host loop around them is `r2u.training.loop`.
"""

import dataclasses
from typing import Callable, Dict, Optional, Union

import tensorflow as tf
from absl import logging

from r2u import config as config_lib
from r2u.nn import layers
from r2u.evaluation import classes
from r2u.evaluation import metrics
from r2u.nn import models
from r2u.training import optim


@dataclasses.dataclass
class State:
    """Everything a checkpoint holds: resuming restores it all."""
    model: models.UNet
    opt: optim.Adam
    step: tf.Variable
    bad_steps: tf.Variable  # steps whose loss or gradient was not finite (not applied)
    total_steps: tf.Variable  # where the schedule ends; 0 until the loop sets it
    loss_scale: Optional[optim.LossScale]
    # Binary: pooled metrics of the foreground probability; K classes: a confusion matrix.
    train_metrics: Union[metrics.StreamingMetrics, classes.StreamingConfusion]

    def checkpoint(self, train_metrics: bool = True,
                   total_steps: bool = True) -> tf.train.Checkpoint:
        """The training metrics (of the epoch so far) are saved too, so a resumed epoch
        reports what an uninterrupted one does, and where the schedule ends; `False`
        reads checkpoints written before they were."""
        extra = {"loss_scale": self.loss_scale} if self.loss_scale else {}
        if train_metrics:
            extra["train_metrics"] = self.train_metrics
        if total_steps:
            extra["total_steps"] = self.total_steps
        return tf.train.Checkpoint(model=self.model, opt=self.opt, step=self.step,
                                   bad_steps=self.bad_steps, **extra)


def make_state(exp: config_lib.Experiment) -> State:
    """Model, optimizer and counters; call under `strategy.scope()` to distribute."""
    model = models.build(exp.model)
    return State(
        model=model,
        opt=optim.Adam(model.trainable_variables, exp.train.learning_rate),
        step=tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA),
        bad_steps=tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_steps",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA),
        total_steps=tf.Variable(0, dtype=tf.int64, trainable=False, name="total_steps",
                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA),
        loss_scale=optim.LossScale() if exp.model.compute_dtype == "float16" else None,
        train_metrics=train_metrics(exp.model.num_classes))


def train_metrics(num_classes: int):
    """The training metrics of a K-class network: binary ones keep today's variables
    (their checkpoints resume), K > 2 counts a confusion matrix of the argmax."""
    if num_classes == 2:
        return metrics.StreamingMetrics()
    return classes.StreamingConfusion(num_classes)


def make_train_step(state: State, loss_fn: Callable, clip_norm: float, jit_compile: bool,
                    strategy: Optional[tf.distribute.Strategy] = None,
                    learning_rate: Optional[Callable] = None) -> Callable:
    """One compiled step: batch -> {"loss", "grad_norm", "finite"} of the global batch.

    `learning_rate(step)`, if given, sets Adam's step size before each update.

    Each replica weighs its loss by its share of the global batch's counted pixels and
    gradients are summed: `wce` is the global-batch mean however the batch is split
    (`dice` is computed per replica, then weighted). With `jit_compile`, one device
    compiles the whole step; several replicas each compile their own forward and
    backward pass (a function shared by replicas would capture one replica's variables)
    and all-reduce and update as a graph (nested functions cannot update them).
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicated = strategy.num_replicas_in_sync > 1
    if replicated and jit_compile:
        logging.info("XLA with %d replicas: forward and backward per replica only",
                     strategy.num_replicas_in_sync)

    # Written in the forward pass, before the step is known to be finite.
    kept = moving_statistics(state.model) + list(state.train_metrics.variables)

    def replica_step(batch):
        ctx = tf.distribute.get_replica_context()
        before = [v.read_value() for v in kept]  # this replica's copies
        pixels = tf.reduce_sum(batch["fov"])
        share = pixels / tf.maximum(ctx.all_reduce(tf.distribute.ReduceOp.SUM, pixels), 1.0)
        grads_fn = lambda b, s: _gradients(state, loss_fn, b, s)  # noqa: E731
        if replicated and jit_compile:
            grads_fn = tf.function(grads_fn, jit_compile=True)
        grads, loss = grads_fn(batch, share)
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if state.loss_scale:
            grads = [g / state.loss_scale.scale for g in grads]
        finite = optim.all_finite(grads)  # of the global batch: every replica agrees
        for var, value in zip(kept, before):
            var.assign(tf.where(finite, var, value))
        grads, norm = tf.clip_by_global_norm(grads, clip_norm)
        return {"grads": grads, "loss": ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss),
                "grad_norm": norm, "finite": finite}

    def step(batch):
        out = strategy.run(replica_step, args=(batch,))
        grads = out.pop("grads")
        out = {k: strategy.experimental_local_results(v)[0] for k, v in out.items()}
        if state.loss_scale:
            state.loss_scale.update(out["finite"])
        if learning_rate is not None:
            state.opt.learning_rate.assign(learning_rate(state.step))
        # A non-finite step leaves the weights, the optimizer, the batch-norm statistics
        # and the training metrics as they were; the step and bad-step counters, the
        # loss scale (float16 retries lower) and the dropout stream move on.
        if out["finite"]:
            # Back in replica context: each replica updates its copy of the weights.
            strategy.run(lambda g: state.opt.apply(g, state.model.trainable_variables),
                         args=(grads,))
        else:
            state.bad_steps.assign_add(1)
        state.step.assign_add(1)  # counts batches consumed: the data position on resume
        return out
    return tf.function(step, jit_compile=jit_compile and not replicated,
                       reduce_retracing=True)


def moving_statistics(model: tf.Module) -> list:
    """The batch-norm moving statistics: non-trainable, updated by training forward passes."""
    return [v for m in model.submodules if isinstance(m, layers.BatchNorm)
            for v in m.variables if not v.trainable]


def _gradients(state: State, loss_fn: Callable, batch: Dict, share: tf.Tensor):
    """This replica's gradients of `share` x its loss (x the loss scale), and that loss."""
    scale = state.loss_scale.scale if state.loss_scale else 1.0
    with tf.GradientTape() as tape:
        logits = state.model(batch["image"], training=True)
        loss = loss_fn(logits, batch["mask"], batch["fov"]) * share
        scaled = loss * scale
    grads = tape.gradient(scaled, state.model.trainable_variables)
    probs = tf.nn.softmax(logits)
    if isinstance(state.train_metrics, metrics.StreamingMetrics):
        probs = probs[..., 1]
    state.train_metrics.update(probs, batch["mask"], batch["fov"])
    return grads, loss


def make_train_loop(step: Callable, steps_per_call: int,
                    stop_at_non_finite: bool = False) -> Callable:
    """`steps_per_call` steps per host call; returns the mean loss, whether all were
    finite and how many ran ("steps").

    With `stop_at_non_finite` (float32/bfloat16, where a non-finite step is a bug or
    bad data) the call ends at the first non-finite step, so no later step is applied.
    Pulling batches from the iterator stays outside XLA; the step inside is compiled.
    """
    @tf.function
    def loop(iterator):
        total, finite, norm = tf.constant(0.0), tf.constant(True), tf.constant(0.0)
        count = tf.constant(0)
        for _ in tf.range(steps_per_call):
            out = step(next(iterator))
            total += out["loss"]
            finite = tf.logical_and(finite, out["finite"])
            norm = out["grad_norm"]
            count += 1
            if stop_at_non_finite:
                if not out["finite"]:
                    break
        return {"loss": total / tf.cast(count, tf.float32), "finite": finite,
                "grad_norm": norm, "steps": count}
    return loop
