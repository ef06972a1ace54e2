"""The compiled training step and the host loop around it.

`make_train_step` builds one explicit `tf.GradientTape` step, runs it through the
`tf.distribute` strategy (default, mirrored or multi-worker: see `r2u.distribute`) and
compiles it with `tf.function` (XLA by `jit_compile`). `make_train_loop` fuses several
steps into one host call. `train` is the host loop: validation each epoch, checkpoints
(latest and best), TensorBoard summaries, progress, and a SavedModel export of the best
model at the end. `ckpt/validation.json` records the validated epochs, so a run killed
at any point resumes to the same history, best checkpoint and export.
"""

import dataclasses
import json
import os
from typing import Callable, Dict, Optional, Union

import tensorflow as tf
from absl import logging

from r2u import config as config_lib
from r2u import devices
from r2u import distribute
from r2u import errors
from r2u import evaluation
from r2u import export
from r2u import faults
from r2u import files
from r2u import inference
from r2u import layers
from r2u import losses
from r2u import metrics
from r2u import models
from r2u import optim
from r2u import summaries
from r2u.data import prepared


@dataclasses.dataclass
class State:
    """Everything a checkpoint holds: resuming restores it all."""
    model: models.UNet
    opt: optim.Adam
    step: tf.Variable
    bad_steps: tf.Variable  # steps whose loss or gradient was not finite (not applied)
    loss_scale: Optional[optim.LossScale]
    train_metrics: metrics.StreamingMetrics

    def checkpoint(self, train_metrics: bool = True) -> tf.train.Checkpoint:
        """The training metrics (of the epoch so far) are saved too, so a resumed epoch
        reports what an uninterrupted one does; `False` reads checkpoints from before."""
        extra = {"loss_scale": self.loss_scale} if self.loss_scale else {}
        if train_metrics:
            extra["train_metrics"] = self.train_metrics
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
        loss_scale=optim.LossScale() if exp.model.compute_dtype == "float16" else None,
        train_metrics=metrics.StreamingMetrics())


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
    kept = _moving_statistics(state.model) + list(state.train_metrics.variables)

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


def _moving_statistics(model: tf.Module) -> list:
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
    state.train_metrics.update(tf.nn.softmax(logits)[..., 1], batch["mask"], batch["fov"])
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


def train(exp: config_lib.Experiment, model_dir: str,
          data: Union[prepared.PreparedData, str], resume: bool = False,
          strategy: Optional[tf.distribute.Strategy] = None,
          resume_overrides: bool = False) -> Dict:
    """Trains `exp` on a prepared dataset (or its folder); returns the final summary.

    Under a multi-worker strategy every worker calls this with the same arguments: only
    the chief writes `model_dir`, the others a private folder deleted at the end, and
    with `resume` every worker restores the chief's latest checkpoint (`r2u.distribute`).

    `resume` continues the run in `model_dir` where it stopped, whenever it was killed:
    with the same checkpoints, validation records, best checkpoint, export and summary
    as a run never interrupted (a run that stopped early stays stopped). It refuses an
    `exp` that differs from `config.json` (but for `inference`, which training fills
    in) unless `resume_overrides`, which also lets a run that stopped early go on.

    Raises FloatingPointError naming the step and the last good checkpoint at the first
    step whose loss or gradient is not finite in float32/bfloat16 (float16 skips such
    steps instead), and DataError naming the shard when a record is corrupt (found by
    its sha256).
    """
    strategy = strategy or tf.distribute.get_strategy()
    data = prepared.of(data)  # the one read of the manifest
    with distribute.worker_dir(strategy, model_dir) as out_dir:
        cfg = exp.train
        _check_resume(exp, model_dir, resume, resume_overrides)
        files.write_atomic(os.path.join(out_dir, "config.json"), exp.to_json().encode())
        tf.random.set_seed(cfg.seed)
        with strategy.scope():
            state = make_state(exp)
        plain = models.build(exp.model)  # validated and exported: reads no replicas
        ckpt = state.checkpoint()
        latest = tf.train.CheckpointManager(ckpt, os.path.join(out_dir, "ckpt"), 3)
        best = tf.train.CheckpointManager(ckpt, os.path.join(out_dir, "best"), 1)
        _restore(state, model_dir, strategy)
        loss_fn = losses.loss_fn(cfg.loss, _class_weights(cfg.class_weights, data))
        total_steps = cfg.steps or cfg.epochs * _steps_per_epoch_of(data, exp)
        schedule = lambda step: optim.learning_rate(  # noqa: E731
            step, cfg.learning_rate, cfg.lr_schedule, cfg.warmup_steps, total_steps)
        step = make_train_step(state, loss_fn, cfg.clip_norm, devices.resolve_xla(cfg.xla),
                               strategy, schedule)
        done = int(state.step.numpy())
        iterator = iter(strategy.distribute_datasets_from_function(
            lambda ctx: _training_dataset(data, exp, ctx, done)))
        epochs = _Epochs(exp, state, plain, data, model_dir, out_dir, best, strategy)
        if resume_overrides:  # new settings may train on after an early stop
            epochs.done["stopped"] = False
        try:
            _fit(exp, state, step, iterator, data, model_dir, latest, epochs)
        except tf.errors.DataLossError as e:
            # A shard of the right size with changed bytes: name it by its sha256.
            data.verify(full=True)
            raise errors.DataError(f"{data.path}: corrupt record ({e.message.strip()[:200]})"
                                   "; re-run bin/prepare") from e
        except KeyboardInterrupt:
            if distribute.num_workers(strategy) == 1:  # saving is collective: peers may
                path = latest.save(checkpoint_number=int(state.step.numpy()))  # be gone
                logging.warning("interrupted: saved %s", path)
            logging.warning("continue from the last checkpoint with --resume")
            raise
        finally:
            epochs.writers.flush()  # TensorBoard has every summary of the run
        history, best_record = epochs.done["history"], epochs.done["best"]
        steps = int(state.step.numpy())  # before the best checkpoint sets it back
        if best.latest_checkpoint:
            ckpt.restore(best.latest_checkpoint).expect_partial()
        distribute.copy_variables(state.model, plain)
        # The operating point chosen on validation travels with the model.
        exp = dataclasses.replace(exp, inference=dataclasses.replace(
            exp.inference, threshold=best_record.get("threshold", 0.5)))
        files.write_atomic(os.path.join(out_dir, "config.json"), exp.to_json().encode())
        if distribute.is_chief(strategy):
            export.save(plain, os.path.join(model_dir, "export"), exp)
        distribute.barrier(strategy)  # workers end together, none looks crashed to another
        summary = {"steps": steps, "best_step": int(state.step.numpy()),
                   "headline": exp.data.headline,
                   "best_validation_score": best_record.get("score"),
                   "threshold": exp.inference.threshold, "history": history}
        files.write_json(os.path.join(out_dir, "summary.json"), summary)
        return summary


def _fit(exp, state, step, iterator, data, model_dir, latest, epochs) -> None:
    """Epochs of steps, each ended by the latest checkpoint and `epochs.end`."""
    cfg = exp.train
    steps_per_epoch = _steps_per_epoch_of(data, exp)
    total_steps = cfg.steps or cfg.epochs * steps_per_epoch
    stop_at_non_finite = state.loss_scale is None
    loops = {}
    progress = summaries.Progress(total_steps, cfg.batch_size)
    done = int(state.step.numpy())
    if done > epochs.done["step"] and (done % steps_per_epoch == 0 or done == total_steps):
        # Killed after the latest checkpoint, before its validation was recorded: the
        # same weights, validated again, give the record the first run would have.
        logging.info("validating step %d again: its validation was not recorded", done)
        epochs.end(done, (done - 1) // steps_per_epoch, progress)
    while done < total_steps and not epochs.done["stopped"]:
        progress.resume()
        epoch = done // steps_per_epoch
        if done % steps_per_epoch == 0:  # a resumed epoch keeps its restored metrics
            state.train_metrics.reset()
        todo = min(steps_per_epoch * (epoch + 1), total_steps) - done
        while todo > 0:
            n = min(cfg.steps_per_call, todo)
            if n not in loops:
                loops[n] = make_train_loop(step, n, stop_at_non_finite)
            out = loops[n](iterator)
            if stop_at_non_finite and not bool(out["finite"]):  # one fetch per call
                _raise_non_finite(state, total_steps, model_dir)
            done, todo = done + n, todo - n
            if done % cfg.log_every < n or todo == 0:  # the only other host fetches
                progress.update(done, float(out["loss"]))
                rate = {"images_per_second": progress.rate} if progress.rate else {}
                epochs.writers.scalars("train", done, loss=out["loss"],
                                       grad_norm=out["grad_norm"],
                                       learning_rate=state.opt.learning_rate.numpy(),
                                       **rate)
        progress.pause()  # rate and ETA count training only
        latest.save(checkpoint_number=done)
        faults.point("after_latest_save")
        epochs.end(done, epoch, progress)


class _Epochs:
    """Ends epochs: validation, the best checkpoint, and the record of both.

    `ckpt/validation.json` (the history, the best record, the last validated step and
    whether training stopped early) is written last, in one rename, after the latest
    checkpoint, the validation and the best checkpoint of the epoch. A run killed
    anywhere in between resumes from the record of the previous epoch, and `_fit`
    validates the restored checkpoint again.
    """

    def __init__(self, exp, state, plain, data, model_dir, out_dir, best, strategy):
        self.exp, self.state, self.plain, self.data = exp, state, plain, data
        self.out_dir, self.best, self.strategy = out_dir, best, strategy
        network = inference.network_fn(plain)
        self.predict = lambda x: network(x)[..., 1]  # foreground [1, H, W]
        self.writers = summaries.Writers(out_dir)
        self.done = _read_validation(model_dir, int(state.step.numpy()))
        if not self.done["step"]:  # a fresh run: its record exists from the start
            os.makedirs(os.path.dirname(_validation_path(out_dir)), exist_ok=True)
            files.write_json(_validation_path(out_dir), self.done)
        # Saving is collective: every worker must take the chief's decisions.
        self.best_score = float(distribute.from_chief(
            strategy, [self.done["best"].get("score", -1.0)])[0])

    def end(self, done: int, epoch: int, progress: summaries.Progress) -> None:
        distribute.copy_variables(self.state.model, self.plain)
        record = _end_epoch(self.exp, self.state, self.data, self.writers, epoch,
                            self.predict)
        record["score"] = float(distribute.from_chief(self.strategy, [record["score"]])[0])
        faults.point("after_validation")
        history, best = self.done["history"] + [record], self.done["best"]
        if record["score"] > self.best_score:
            self.best_score, best = record["score"], record
            self.best.save(checkpoint_number=done)
            files.write_json(os.path.join(self.out_dir, "best.json"), record)
            faults.point("after_best_save")
        cfg = self.exp.train
        stopped = False
        if cfg.early_stopping and _stale(history, cfg.early_stopping):
            logging.info("early stopping after epoch %d", epoch + 1)
            stopped = True
        elif cfg.max_minutes and progress.training_seconds() > 60 * cfg.max_minutes:
            logging.warning("time budget of %g minutes of training spent: stopping after "
                            "epoch %d at step %d", cfg.max_minutes, epoch + 1, done)
            stopped = True
        self.done = {"step": done, "history": history, "best": best, "stopped": stopped}
        files.write_json(_validation_path(self.out_dir), self.done)
        faults.point("after_validation_save")


def _validation_path(out_dir: str) -> str:
    return os.path.join(out_dir, "ckpt", "validation.json")


def _read_validation(model_dir: str, step: int) -> Dict:
    """The chief's record of the epochs validated up to checkpoint `step`.

    For a model_dir written before there was a record: an empty history and best.json,
    as if `step` was validated.
    """
    path = _validation_path(model_dir)
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
        if record["step"] <= step:
            return record
        logging.warning("%s is of step %d, after checkpoint step %d: not used", path,
                        record["step"], step)
    return {"step": step, "history": [], "best": _best_record(model_dir), "stopped": False}


def _check_resume(exp, model_dir: str, resume: bool, resume_overrides: bool) -> None:
    """Refuses to overwrite a run without `resume`, or to change its config silently."""
    if not tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt")):
        return
    if not resume:
        raise FileExistsError(f"{model_dir} already holds checkpoints; pass resume=True "
                              "(--resume) to continue or use another model_dir")
    path = os.path.join(model_dir, "config.json")
    if resume_overrides or not os.path.exists(path):
        return
    with open(path) as f:
        old = json.load(f)
    try:  # compared in today's layout: an older config.json holds the same run
        old = json.loads(config_lib.Experiment.from_dict(old).to_json())
    except (TypeError, ValueError, KeyError):
        pass  # not readable as an Experiment: every field that differs is named
    old, new = _flatten(old), _flatten(json.loads(exp.to_json()))
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k, "<absent>") != new.get(k, "<absent>")
                     and not k.startswith("inference."))  # training writes it at the end
    if changed:
        diffs = ", ".join(f"{k} {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
                          for k in changed)
        raise ValueError(f"{model_dir}: resuming with a configuration that differs from "
                         f"its config.json in {diffs}; resume with the same settings, or "
                         "pass resume_overrides=True (bin/train --allow_changed_config) "
                         "to continue with the new ones")


def _flatten(tree: Dict, prefix: str = "") -> Dict:
    """{"train": {"steps": 3}} -> {"train.steps": 3}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _restore(state, model_dir, strategy) -> None:
    """Continues from the chief's latest checkpoint, on every worker."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt"))
    if path:
        # Checkpoints written before the training metrics were saved restore without.
        names = [name for name, _ in tf.train.list_variables(path)]
        metrics_saved = any(name.startswith("train_metrics/") for name in names)
        state.checkpoint(metrics_saved).restore(path).assert_existing_objects_matched()
        logging.info("resumed from %s at step %d", path, int(state.step.numpy()))
    distribute.check_same_step(strategy, int(state.step.numpy()), model_dir)


def _training_dataset(data: prepared.PreparedData, exp: config_lib.Experiment,
                      ctx: tf.distribute.InputContext, done: int) -> tf.data.Dataset:
    """This input pipeline's endless, seeded training stream, `done` steps in."""
    cut, cfg = exp.data, exp.train
    distribute.log_shards(ctx, data.shard_paths("train"))
    return data.dataset(
        "train", batch_size=ctx.get_per_replica_batch_size(cfg.batch_size),
        training=True, patch_size=cut.patch_size,
        patches_per_image=cut.patches_per_image, preprocessing=exp.preprocessing,
        augment=cut.augment, seed=cfg.seed, cache=cut.cache,
        input_context=ctx).skip(distribute.batches_to_skip(ctx, done))


def _steps_per_epoch_of(data: prepared.PreparedData, exp: config_lib.Experiment) -> int:
    """`steps_per_epoch`, else one pass over the training images (times patches per
    image for patch training)."""
    if exp.train.steps_per_epoch:
        return exp.train.steps_per_epoch
    examples = data.split("train").num_examples
    if exp.data.patch_size:
        examples *= exp.data.patches_per_image
    return max(1, examples // exp.train.batch_size)


def _end_epoch(exp, state, data, writers, epoch, predict) -> Dict:
    step = int(state.step.numpy())
    train_scores = {k: float(v) for k, v in state.train_metrics.result().items()}
    writers.scalars("train", step, **train_scores)
    val = evaluation.validate(predict, data.dataset(
        "validation", batch_size=1, training=False, preprocessing=exp.preprocessing,
        cache=False),
        exp.data.headline)
    point = val["operating_point"]
    writers.scalars("validation", step, **val["pooled"],
                    **{f"{point['headline']}_best": point["best"],
                       f"{point['headline']}_at_0.5": point["at_0.5"],
                       "threshold": point["threshold"]})
    writers.images("validation", step, val["examples"])
    record = {"epoch": epoch + 1, "step": step, "score": point["best"],
              "threshold": point["threshold"], "operating_point": point,
              "validation": val["pooled"], "validation_per_image": val["per_image_mean"],
              "train_dice": train_scores["dice"]}
    logging.info("epoch %d step %d: train dice %.4f | validation %s %.4f at threshold "
                 "%.2f (%.4f at 0.5), auc %.4f (%d images)", epoch + 1, step,
                 train_scores["dice"], point["headline"], point["best"],
                 point["threshold"], point["at_0.5"], val["pooled"]["auc"],
                 val["num_images"])
    return record


def _raise_non_finite(state, total_steps: int, model_dir: str) -> None:
    """float32/bfloat16: a non-finite step is a bug or bad data, so stop right there."""
    step = int(state.step.numpy())
    raise FloatingPointError(
        f"non-finite loss or gradient at step {step} of {total_steps}: training stopped "
        f"there, that step was not applied and nothing was saved after it; last good "
        f"checkpoint: {tf.train.latest_checkpoint(os.path.join(model_dir, 'ckpt'))}")


def _class_weights(spec: str, data: prepared.PreparedData):
    if spec == "none":
        return None
    if spec == "auto":
        return list(data.class_weights)
    return config_lib.parse_pair(spec)


def _best_record(model_dir: str) -> Dict:
    """The chief's best validation record so far ({} before any)."""
    path = os.path.join(model_dir, "best.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _stale(history, patience: int) -> bool:
    scores = [r["score"] for r in history]
    return len(scores) > patience and max(scores[-patience:]) <= max(scores[:-patience])

