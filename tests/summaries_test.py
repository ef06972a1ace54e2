"""Tests of r2u.training.summaries.Progress (on a fake clock) and of benchmarks/reproduce/curves.py
reading what summaries.Writers logs (a CLI smoke run; skipped without matplotlib)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

from r2u.training import summaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURVES = os.path.join(ROOT, "benchmarks", "reproduce", "curves.py")
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


class FakeClock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class ProgressTest(unittest.TestCase):

    def setUp(self):
        self.clock = FakeClock(100.0)
        self.progress = summaries.Progress(1000, 4, width=10, clock=self.clock)

    def update(self, at: float, step: int, loss: float = 0.5) -> str:
        self.clock.now = at
        with self.assertLogs("absl", "INFO") as logs:
            self.progress.update(step, loss)
        self.assertLen(logs.records, 1)
        return logs.records[0].getMessage()

    def assertLen(self, seq, n):
        self.assertEqual(len(seq), n, seq)

    def test_first_update_starts_the_clock_and_logs_no_rate(self):
        # 900 s between construction and the first update (tracing, compilation) count
        # for nothing: no "0.0 img/s", no ETA, rate still unmeasured.
        self.assertEqual(self.update(1000.0, 100, 0.69314),
                         "step 100/1000 [>         ]  10% loss 0.6931")
        self.assertEqual(self.progress.rate, 0.0)
        # 100 more steps of 4 images in 10 s: 40 img/s; 800 steps left = 3200 images.
        self.assertEqual(self.update(1010.0, 200, 0.25),
                         "step 200/1000 [=>        ]  20% loss 0.2500 40.0 img/s ETA 00:01:20")
        self.assertEqual(self.progress.rate, 40.0)

    def test_rate_is_the_mean_since_the_first_update(self):
        self.update(0.0, 0)
        self.update(10.0, 100)   # 40 img/s
        line = self.update(40.0, 200)  # 800 images in 40 s: 20 img/s, not the last 13.3
        self.assertEqual(self.progress.rate, 20.0)
        self.assertTrue(line.endswith(" 20.0 img/s ETA 00:02:40"), line)

    def test_paused_time_is_not_training_time(self):
        self.update(0.0, 0)
        self.update(10.0, 100)
        self.clock.now = 10.0
        self.progress.pause()
        self.clock.now = 500.0       # validation and checkpoints: 490 s
        self.progress.resume()
        line = self.update(510.0, 200)  # 800 images in 20 training seconds
        self.assertEqual(self.progress.rate, 40.0)
        self.assertTrue(line.endswith(" 40.0 img/s ETA 00:01:20"), line)
        self.assertEqual(self.progress.training_seconds(), 20.0)

    def test_paused_context_manager_and_repeated_pauses(self):
        self.update(0.0, 0)
        self.update(10.0, 100)
        self.clock.now = 10.0
        with self.progress.paused():
            self.clock.now = 70.0
            self.progress.pause()    # already paused: the first pause counts
            self.clock.now = 100.0
        self.progress.resume()       # not paused: no-op
        self.clock.now = 110.0
        with self.progress.paused():
            self.clock.now = 200.0
        line = self.update(210.0, 300)  # 1200 images in 10 + 10 + 10 training seconds
        self.assertEqual(self.progress.rate, 40.0)
        self.assertTrue(line.endswith(" 40.0 img/s ETA 00:01:10"), line)

    def test_time_paused_before_the_first_update_or_during_an_update_is_excluded(self):
        self.progress.pause()        # before any update: nothing to subtract from
        self.clock.now = 150.0
        self.progress.resume()
        self.update(200.0, 50)
        self.clock.now = 205.0
        self.progress.pause()
        self.assertEqual(self.progress.training_seconds(), 5.0)
        self.update(300.0, 100)      # logged while paused: counts up to the pause
        self.assertEqual(self.progress.rate, 40.0)
        self.clock.now = 400.0
        self.progress.resume()
        self.update(405.0, 150)      # 100 steps in 5 + 5 s
        self.assertEqual(self.progress.rate, 40.0)

    def test_eta_past_a_day_and_at_the_end(self):
        progress = summaries.Progress(100_000, 1, width=10, clock=self.clock)
        self.progress = progress
        self.update(0.0, 0)
        line = self.update(100.0, 100)  # 1 img/s, 99,900 images left
        self.assertTrue(line.endswith(" 1.0 img/s ETA 27:45:00"), line)
        line = self.update(100_000.0, 100_000)
        self.assertTrue(line.startswith("step 100000/100000 [=========>] 100% "), line)
        self.assertTrue(line.endswith(" 1.0 img/s ETA 00:00:00"), line)

    def test_a_repeated_step_keeps_the_measured_rate(self):
        self.update(0.0, 10)
        self.update(0.0, 10)  # zero elapsed, zero steps: no division, no rate yet
        self.assertEqual(self.progress.rate, 0.0)
        self.update(10.0, 110)
        self.assertEqual(self.progress.rate, 40.0)


def write_run(run_dir: str, resumed: bool) -> None:
    """Two epochs of train loss and validation scores, as r2u/training/loop.py logs them."""
    writers = summaries.Writers(run_dir)
    for step in range(10, 201, 10):
        writers.scalars("train", step, loss=1.0 / step, grad_norm=1.0,
                        images_per_second=40.0)
    for step, dice in ((100, 0.5), (200, 0.6)):
        writers.scalars("validation", step, dice=dice, jaccard=dice / (2 - dice),
                        auc=0.9, accuracy=0.95)
    rng = np.random.default_rng(0)
    example = (rng.normal(size=(8, 8, 1)), rng.random((8, 8)) > 0.5, rng.random((8, 8)))
    writers.images("validation", 200, [example])
    writers.flush()
    if resumed:  # a restart from step 100 logs steps 110-200 again
        train_dir = os.path.join(run_dir, "tb", "train")
        first = set(os.listdir(train_dir))
        writers = summaries.Writers(run_dir)
        for step in range(110, 201, 10):
            writers.scalars("train", step, loss=2.0)
        writers.flush()
        # Writers opened in the same second get names whose counters sort as strings
        # ("...10" before "...9"): name the later file so that it sorts first.
        (later,) = set(os.listdir(train_dir)) - first
        os.rename(os.path.join(train_dir, later),
                  os.path.join(train_dir, "events.out.tfevents.0000000000.resumed.v2"))


class CurvesTest(unittest.TestCase):

    def test_without_matplotlib_it_fails_with_one_line(self):
        code = ("import runpy, sys; sys.modules['matplotlib'] = None; "
                f"sys.argv = ['curves.py', '--runs=x', '--out=y.png']; "
                f"runpy.run_path({CURVES!r}, run_name='__main__')")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                text=True, timeout=120)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertRegex(result.stderr, r"^curves\.py needs matplotlib[^\n]*pip install"
                                        r"[^\n]*\n$")

    @unittest.skipUnless(HAVE_MATPLOTLIB, "matplotlib is not installed (benchmarks-only "
                                          "dependency: pip install matplotlib)")
    def test_cli_plots_the_logged_tags_and_reads_the_last_write(self):
        with tempfile.TemporaryDirectory() as tmp:
            runs = [os.path.join(tmp, "r2unet"), os.path.join(tmp, "unet")]
            write_run(runs[0], resumed=True)
            write_run(runs[1], resumed=False)
            out = os.path.join(tmp, "figs", "curves.png")
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
            # Plot, then (same process, so TensorFlow is imported once) read back the
            # resumed run's train scalars with the script's reader.
            code = (f"import sys, json; sys.argv = ['curves.py', "
                    f"'--runs={runs[0]},{runs[1]}', '--out={out}']; "
                    f"sys.path.insert(0, {os.path.dirname(CURVES)!r}); import curves; "
                    f"from absl import app\n"
                    f"try:\n  app.run(curves.main)\n"
                    f"except SystemExit as e:\n  assert not e.code, e.code\n"
                    f"print(json.dumps(curves.read_scalars({runs[0]!r}, 'train')))")
            result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, timeout=600, env=env, cwd=ROOT)
            self.assertEqual(result.returncode, 0, result.stderr[-3000:])
            lines = result.stdout.splitlines()
            self.assertIn("skipped validation tags no run logged: f1 (logged: accuracy, "
                          "auc, dice, jaccard)", lines)
            self.assertIn(f"wrote {out} (4 panels: training loss, validation dice, "
                          "validation jaccard, validation auc)", lines)
            with Image.open(out) as image:
                self.assertEqual(image.size, (900, 600))  # 3 panels a row, 300x300 each
            train = json.loads(lines[-1])
            self.assertEqual(sorted(train), ["grad_norm", "images_per_second", "loss"])
            loss = dict(train["loss"])
            self.assertEqual(len(loss), 20)
            self.assertAlmostEqual(loss[100], 0.01)
            self.assertEqual(loss[110], 2.0)  # the resumed run's value wins
            self.assertEqual(loss[200], 2.0)


if __name__ == "__main__":
    unittest.main()
