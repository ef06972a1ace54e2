"""TensorBoard summaries and a console progress line with throughput and ETA."""

import contextlib
import os
import time
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from r2u import figures


class Writers:
    """One TensorBoard writer per phase under `model_dir/tb/<phase>`."""

    def __init__(self, model_dir: str):
        self.root = os.path.join(model_dir, "tb")
        self._writers = {}

    def _get(self, phase: str):
        if phase not in self._writers:
            self._writers[phase] = tf.summary.create_file_writer(
                os.path.join(self.root, phase))
        return self._writers[phase]

    def scalars(self, phase: str, step: int, **values) -> None:
        with self._get(phase).as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, float(value))

    def images(self, phase: str, step: int,
               examples: Sequence[Tuple[tf.Tensor, tf.Tensor, tf.Tensor]],
               classes: Sequence[str] = ()) -> None:
        """Input, ground truth and prediction overlay per example: binary (foreground
        probabilities [H, W]) in the TP/FP/FN colour code of `figures.overlay`; K
        classes (probabilities [H, W, K]) in the class colours, with a legend."""
        if not examples:
            return
        pictures = {"input": [], "ground_truth": [], "prediction_overlay": []}
        for image, mask, prob in examples:
            shown, prob = show_image(image), np.asarray(prob)
            if prob.ndim == 3:
                labels = np.asarray(mask)
                pictures["input"].append(shown)
                pictures["ground_truth"].append(figures.label_overlay(
                    shown, labels, classes, opacity=0.6))
                pictures["prediction_overlay"].append(figures.label_overlay(
                    shown, prob.argmax(-1), classes, opacity=0.6))
                continue
            truth = np.asarray(mask) > 0
            pictures["input"].append(shown)
            pictures["ground_truth"].append(figures.gray(truth))
            pictures["prediction_overlay"].append(figures.overlay(
                shown, prob > 0.5, truth, opacity=0.6, dim=0.6))
        with self._get(phase).as_default(step=step):
            for name, batch in pictures.items():
                tf.summary.image(name, _same_size(batch), max_outputs=len(batch))

    def flush(self) -> None:
        """Writes what the writers hold to their event files (at the end of training)."""
        for writer in self._writers.values():
            writer.flush()


def show_image(image) -> np.ndarray:
    """Standardised [H, W, C] -> uint8 RGB, stretched to its own range."""
    x = np.asarray(image, np.float32)
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
    return (figures.to_rgb(x) * 255).astype(np.uint8)


def _same_size(pictures):
    h = max(p.shape[0] for p in pictures)
    w = max(p.shape[1] for p in pictures)
    return np.stack([np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0)))
                     for p in pictures])


class Progress:
    """Logs `step/total [====>    ] pct loss img/s ETA`, timing training only.

    The first `update` starts the clock and logs no rate (the time before it holds
    tracing and compilation, and a resumed run starts mid-way); each later one logs the
    mean rate since then, `rate` (images per second, 0.0 until measured), and the ETA of
    the remaining steps at that rate. Time between `pause()` and `resume()` (or inside
    `with progress.paused():`), e.g. validation and checkpoints, is not training time
    and is left out of both. `clock` is injectable for tests.
    """

    def __init__(self, total_steps: int, batch_size: int, width: int = 24,
                 clock: Callable[[], float] = time.perf_counter,
                 deadline: Optional[float] = None):
        self.total, self.batch_size, self.width = total_steps, batch_size, width
        self.deadline = deadline  # the planned end (time.time()), shown on each line
        self.rate = 0.0
        self._clock = clock
        self._start = None      # (time, step) of the first update
        self._excluded = 0.0    # seconds paused since the first update
        self._paused_at = None  # time of an unmatched pause()

    def pause(self) -> None:
        """Stops the training clock (no-op if already paused)."""
        if self._paused_at is None:
            self._paused_at = self._clock()

    def resume(self) -> None:
        """Restarts the training clock (no-op if not paused)."""
        if self._paused_at is not None:
            if self._start is not None:
                self._excluded += self._clock() - max(self._paused_at, self._start[0])
            self._paused_at = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """`pause()` on entry and `resume()` on exit."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def training_seconds(self) -> float:
        """Unpaused seconds since the first update (0.0 before it)."""
        if self._start is None:
            return 0.0
        now = self._clock() if self._paused_at is None else max(self._paused_at,
                                                                 self._start[0])
        return now - self._start[0] - self._excluded

    def update(self, step: int, loss: float, note: str = "") -> None:
        """Logs the line of `step`; `note` (e.g. the Dice of each class) follows the
        loss."""
        if self._start is None:
            self._start = (self._clock(), step)
        else:
            seconds = self.training_seconds()
            if step > self._start[1] and seconds > 0:
                self.rate = (step - self._start[1]) * self.batch_size / seconds
        frac = min(step / max(self.total, 1), 1.0)
        bar = "=" * int(frac * self.width)
        line = "step %d/%d [%-*s] %3d%% loss %.4f" % (
            step, self.total, self.width, bar[:-1] + ">" if bar else "", 100 * frac, loss)
        if note:
            line += " " + note
        if self.rate:
            eta = max(self.total - step, 0) * self.batch_size / self.rate
            line += " %.1f img/s ETA %s" % (self.rate, self._hms(eta))
        if self.deadline:
            line += " | planned end %s" % time.strftime("%H:%M:%S",
                                                       time.localtime(self.deadline))
        logging.info("%s", line)

    @staticmethod
    def _hms(seconds: float) -> str:
        """HH:MM:SS, rounded to the second; hours go past 24."""
        minutes, secs = divmod(int(round(seconds)), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours:02d}:{minutes:02d}:{secs:02d}"
