"""The host loop of training: `train(exp, model_dir, data)`.

A plain loop around the compiled step (`r2u.training.step`, re-exported here): epochs
of fused step calls, each ended by the latest checkpoint and validation, the best
checkpoint and the run's record (`r2u.training.epochs`, `r2u.training.run_record`),
TensorBoard summaries and progress; at the end the best model is restored and exported
as a SavedModel. A run killed at any point resumes to the same history, best
checkpoint and export.
"""

import contextlib
import dataclasses
import os
import statistics
import time
from typing import Callable, Dict, Iterator, List, Optional, Union

import tensorflow as tf
from absl import logging

from r2u import config as config_lib
from r2u import devices
from r2u import errors
from r2u import files
from r2u.data import prepared
from r2u.evaluation import selection
from r2u.inference import export
from r2u.nn import models
from r2u.training import budget
from r2u.training import distribute
from r2u.training import epochs as epochs_lib
from r2u.training import faults
from r2u.training import inputs
from r2u.training import losses
from r2u.training import optim
from r2u.training import run_record
from r2u.training import step as step_lib
from r2u.training import summaries

# Share of a bfloat16 run's steps that may be non-finite and skipped: a USGRA-Seg run
# on an AMX CPU had 6 in its first 128 steps, none reproducible from its checkpoints.
MAX_SKIPPED = 0.1

# The compiled step is part of the training API.
State = step_lib.State
make_state = step_lib.make_state
make_train_step = step_lib.make_train_step
make_train_loop = step_lib.make_train_loop


@dataclasses.dataclass
class Run:
    """One training run, as the host loop sees it."""
    exp: config_lib.Experiment
    data: prepared.PreparedData
    state: step_lib.State
    plain: tf.Module  # validated and exported: a copy that reads no replicas
    model_dir: str
    out_dir: str
    strategy: tf.distribute.Strategy
    latest: tf.train.CheckpointManager
    best: tf.train.CheckpointManager
    steps_per_epoch: int
    deadline: Optional[float] = None  # time.time() by which the budget ends the run
    after_validations: float = 0.0  # what follows the last step, in validation passes
    # This process's validations but the first, which also traces their graphs.
    validation_seconds: List[float] = dataclasses.field(default_factory=list)
    validations: int = 0  # done by this process
    step: Optional[Callable] = None  # the compiled train step
    batches: Optional[Iterator] = None  # the distributed training stream
    epochs: Optional[epochs_lib.Epochs] = None

    @property
    def done(self) -> int:
        """Steps taken (batches consumed: the data position on resume)."""
        return int(self.state.step.numpy())

    @property
    def total_steps(self) -> int:
        """Where the schedule ends (a run behind its deadline moves it sooner)."""
        return int(self.state.total_steps.numpy())


def train(exp: config_lib.Experiment, model_dir: str,
          data: Union[prepared.PreparedData, str], resume: bool = False,
          strategy: Optional[tf.distribute.Strategy] = None,
          resume_overrides: bool = False, deadline: Optional[float] = None,
          after_validations: float = 0.0) -> Dict:
    """Trains `exp` on a prepared dataset (or its folder); returns the final summary.

    Under a multi-worker strategy every worker calls this with the same arguments: only
    the chief writes `model_dir`, the others a private folder deleted at the end, and
    with `resume` every worker restores the chief's latest checkpoint (`r2u.training.distribute`).

    `resume` continues the run in `model_dir` where it stopped, whenever it was killed:
    with the same checkpoints, validation records, best checkpoint, export and summary
    as a run never interrupted (a run that stopped early stays stopped). It refuses an
    `exp` that differs from `config.json` (but for `inference`, which training fills
    in) unless `resume_overrides`, which also lets a run that stopped early go on.

    `deadline` (a `time.time()`), the end the budget planned, is shown by the progress
    line; a run behind it ends its schedule sooner, keeping `after_validations`
    validation passes' time for what follows its last step (`r2u.training.budget`).

    Raises FloatingPointError naming the step and the last good checkpoint at the first
    step whose loss or gradient is not finite in float32, or in bfloat16 once more than
    `MAX_SKIPPED` of the steps were (float16 skips such steps), and DataError naming
    the shard when a record is corrupt (found by its sha256).
    """
    strategy = strategy or tf.distribute.get_strategy()
    data = prepared.of(data)  # the one read of the manifest
    run_record.check_matches(exp, data)
    with distribute.worker_dir(strategy, model_dir) as out_dir:
        run_record.check_resume(exp, model_dir, resume, resume_overrides)
        files.write_atomic(os.path.join(out_dir, "config.json"), exp.to_json().encode())
        tf.random.set_seed(exp.train.seed)
        run = _start(exp, data, model_dir, out_dir, strategy, resume_overrides)
        if distribute.num_workers(strategy) == 1:  # one host decides alone
            run.deadline, run.after_validations = deadline, after_validations
        if resume_overrides:  # new settings may train on after an early stop
            run.epochs.done["stopped"] = False
        with _failures(run):
            _fit(run)
        return _finish(run)


def _start(exp, data, model_dir: str, out_dir: str, strategy, overrides: bool) -> Run:
    """The state restored from the latest checkpoint, its step, stream and epochs.

    A resumed run keeps the schedule length it saved (a deadline may have shortened it)
    unless its settings were overridden: then the new settings say where it ends.
    """
    with strategy.scope():
        state = make_state(exp)
    plain = models.build(exp.model)
    ckpt = state.checkpoint()
    latest = tf.train.CheckpointManager(ckpt, os.path.join(out_dir, "ckpt"), 3)
    best = tf.train.CheckpointManager(ckpt, os.path.join(out_dir, "best"), 1)
    _restore(state, model_dir, strategy)
    per_epoch = inputs.steps_per_epoch(data, exp)
    if overrides or not int(state.total_steps.numpy()):
        state.total_steps.assign(exp.train.steps or exp.train.epochs * per_epoch)
    run = Run(exp=exp, data=data, state=state, plain=plain, model_dir=model_dir,
              out_dir=out_dir, strategy=strategy, latest=latest, best=best,
              steps_per_epoch=per_epoch)
    run.step, run.batches = _step_fn(run), _batches(run)
    run.epochs = epochs_lib.Epochs(exp, state, plain, data, model_dir, out_dir, best,
                                   strategy)
    return run


def _restore(state, model_dir, strategy) -> None:
    """Continues from the chief's latest checkpoint, on every worker."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt"))
    if path:
        # Checkpoints written before the training metrics were saved restore without.
        names = [name for name, _ in tf.train.list_variables(path)]
        saved = [any(name.startswith(f"{key}/") for name in names)
                 for key in ("train_metrics", "total_steps")]
        state.checkpoint(*saved).restore(path).assert_existing_objects_matched()
        logging.info("resumed from %s at step %d", path, int(state.step.numpy()))
    distribute.check_same_step(strategy, int(state.step.numpy()), model_dir)


def _step_fn(run: Run) -> Callable:
    """The compiled step with the run's loss, clipping, XLA choice and schedule."""
    cfg = run.exp.train
    loss_fn = losses.loss_fn(cfg.loss, inputs.class_weights(cfg.class_weights, run.data))
    schedule = lambda step: optim.learning_rate(  # noqa: E731
        step, cfg.learning_rate, cfg.lr_schedule, cfg.warmup_steps,
        run.state.total_steps)
    return make_train_step(run.state, loss_fn, cfg.clip_norm,
                           devices.resolve_xla(cfg.xla), run.strategy, schedule)


def _batches(run: Run):
    """The distributed training stream, from the restored step on."""
    done = run.done
    return iter(run.strategy.distribute_datasets_from_function(
        lambda ctx: inputs.training_dataset(run.data, run.exp, ctx, done)))


@contextlib.contextmanager
def _failures(run: Run):
    """Names a corrupt shard, saves on Ctrl-C, and flushes the summaries regardless."""
    try:
        yield
    except tf.errors.DataLossError as e:
        # A shard of the right size with changed bytes: name it by its sha256.
        run.data.verify(full=True)
        raise errors.DataError(f"{run.data.path}: corrupt record "
                               f"({e.message.strip()[:200]}); re-run bin/prepare") from e
    except KeyboardInterrupt:
        if distribute.num_workers(run.strategy) == 1:  # saving is collective: peers may
            path = run.latest.save(checkpoint_number=run.done)  # be gone
            logging.warning("interrupted: saved %s", path)
        logging.warning("continue from the last checkpoint with --resume")
        raise
    finally:
        run.epochs.writers.flush()  # TensorBoard has every summary of the run


def _fit(run: Run) -> None:
    """Epochs of steps, each ended by the latest checkpoint and `epochs.end`."""
    progress = summaries.Progress(run.total_steps, run.exp.train.batch_size,
                                  deadline=run.deadline)
    done, per_epoch = run.done, run.steps_per_epoch
    if done > run.epochs.done["step"] and (done % per_epoch == 0
                                           or done == run.total_steps):
        # Killed after the latest checkpoint, before its validation was recorded: the
        # same weights, validated again, give the record the first run would have.
        logging.info("validating step %d again: its validation was not recorded", done)
        run.epochs.end(done, (done - 1) // per_epoch, progress)
    loops = _Loops(run.step,
                   stop_at_non_finite=run.exp.model.compute_dtype == "float32")
    while done < run.total_steps and not run.epochs.done["stopped"]:
        done = _epoch(run, loops, progress, done)


class _Loops:
    """Compiled loops of `n` steps per host call, built once per `n`."""

    def __init__(self, step: Callable, stop_at_non_finite: bool):
        self.step, self.stop_at_non_finite, self.loops = step, stop_at_non_finite, {}

    def __call__(self, n: int, iterator) -> Dict:
        if n not in self.loops:
            self.loops[n] = make_train_loop(self.step, n, self.stop_at_non_finite)
        return self.loops[n](iterator)


def _epoch(run: Run, loops: _Loops, progress: summaries.Progress, done: int) -> int:
    """Trains the rest of the epoch at step `done`, saves and validates; new `done`."""
    cfg = run.exp.train
    progress.resume()
    epoch = done // run.steps_per_epoch
    if done % run.steps_per_epoch == 0:  # a resumed epoch keeps its restored metrics
        run.state.train_metrics.reset()
    todo = min(run.steps_per_epoch * (epoch + 1), run.total_steps) - done
    while todo > 0:
        n = min(cfg.steps_per_call, todo)
        out = loops(n, run.batches)
        if run.state.loss_scale is None and not bool(out["finite"]):  # a fetch per call
            _non_finite(run, loops.stop_at_non_finite)
        done, todo = done + n, todo - n
        if done % cfg.log_every < n or todo == 0:  # the only other host fetches
            _log(run, progress, done, out)
    progress.pause()  # rate and ETA count training only
    _keep_deadline(run, progress, done)  # before the save: a resumed run keeps it
    run.latest.save(checkpoint_number=done)
    faults.point("after_latest_save")
    start = time.perf_counter()
    run.epochs.end(done, epoch, progress)
    if run.validations:
        run.validation_seconds.append(time.perf_counter() - start)
    run.validations += 1
    return done


def _keep_deadline(run: Run, progress: summaries.Progress, done: int) -> None:
    """Ends the schedule sooner when the machine turned slower than measured: the
    cosine decay then still reaches zero by the deadline."""
    if not (run.deadline and run.validation_seconds and progress.rate):
        return
    # The median: one validation slowed by a passing job must not cut the schedule.
    total = budget.replanned(done, run.total_steps, run.steps_per_epoch,
                             run.exp.train.batch_size / progress.rate,
                             statistics.median(run.validation_seconds),
                             run.deadline - time.time(),
                             run.after_validations)
    if total < run.total_steps:
        logging.warning("behind the time budget: the schedule now ends at step %d "
                        "instead of %d", total, run.total_steps)
        run.state.total_steps.assign(total)
        progress.total = total


def _log(run: Run, progress: summaries.Progress, done: int, out: Dict) -> None:
    note = ""
    if run.data.num_classes > 2:  # the epoch's Dice of each class so far
        scores = epochs_lib.train_dice(run.state, run.data.classes)
        note = "dice " + epochs_lib.dice_text(scores["dice"], {
            k[5:]: v for k, v in scores.items() if k.startswith("dice/")})
    progress.update(done, float(out["loss"]), note)
    rate = {"images_per_second": progress.rate} if progress.rate else {}
    run.epochs.writers.scalars("train", done, loss=out["loss"],
                               grad_norm=out["grad_norm"],
                               learning_rate=run.state.opt.learning_rate.numpy(), **rate)


def _non_finite(run: Run, stop: bool) -> None:
    """float32: a non-finite step is a bug or bad data, so stop right there. bfloat16
    steps turn non-finite now and then on some CPUs (USGRA-Seg on an AMX Xeon: 1 in 269
    steps in one run, 6 in 128 in another, none reproducible from their checkpoints).
    Such steps are skipped (not applied, as float16 skips them) until more than
    `MAX_SKIPPED` of the run's steps were."""
    skipped = int(run.state.bad_steps.numpy())
    if not stop and skipped <= max(3, MAX_SKIPPED * run.total_steps):
        logging.warning("step %d: non-finite loss or gradient in bfloat16, step skipped "
                        "(%d so far)", run.done, skipped)
        return
    last = tf.train.latest_checkpoint(os.path.join(run.model_dir, "ckpt"))
    why = "" if stop else f" after {skipped} skipped steps"
    raise FloatingPointError(
        f"non-finite loss or gradient at step {run.done} of {run.total_steps}{why}: "
        f"training stopped there, that step was not applied and nothing was saved after "
        f"it; last good checkpoint: {last}")


def _finish(run: Run) -> Dict:
    """Restores the best checkpoint, exports it with its threshold, writes the summary."""
    history, best_record = run.epochs.done["history"], run.epochs.done["best"]
    steps = run.done  # before the best checkpoint sets it back
    if run.best.latest_checkpoint:
        run.best.checkpoint.restore(run.best.latest_checkpoint).expect_partial()
    distribute.copy_variables(run.state.model, run.plain)
    # The operating point (and inference mode) chosen on validation travel with the model.
    exp = dataclasses.replace(run.exp, inference=dataclasses.replace(
        run.exp.inference, threshold=best_record.get("threshold", 0.5)))
    exp, chosen = selection.settle(run.plain, exp, run.data)
    files.write_atomic(os.path.join(run.out_dir, "config.json"), exp.to_json().encode())
    if distribute.is_chief(run.strategy):
        export.save(run.plain, os.path.join(run.model_dir, "export"), exp)
    distribute.barrier(run.strategy)  # workers end together, none looks crashed to another
    summary = {"steps": steps, "best_step": run.done, "headline": exp.data.headline,
               "best_validation_score": best_record.get("score"),
               "threshold": exp.inference.threshold, "history": history,
               "inference_mode": exp.inference.mode, "selection": chosen,
               "skipped_steps": int(run.state.bad_steps.numpy())}
    files.write_json(os.path.join(run.out_dir, "summary.json"), summary)
    return summary
