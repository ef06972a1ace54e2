"""The host loop's two ways to end a run early: early stopping, and Ctrl-C, which saves.

Both run real training on a tiny prepared synthetic dataset, through `loop.train` or
`bin/train`, so they test what a user gets rather than the loop's internals.
"""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import tensorflow as tf

from r2u import config
from r2u.training import loop
from r2u.data import prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATIENCE = 2
STEPS_PER_EPOCH = 2


def _tmpdir(test):
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def frozen_experiment():
    """A tiny synthetic run whose weights and batch-norm statistics never change.

    A learning rate of 0 is refused, and would still move the batch-norm moving
    statistics (updated by every training step), so validation scores would drift.
    Instead every step is skipped: float16 with class weights of 1e30 overflows every
    gradient, and a skipped float16 step changes nothing. Every validation score is
    then equal, which is no improvement: the run stops after PATIENCE + 1 epochs.
    """
    exp = config.synthetic()
    return dataclasses.replace(
        exp,
        model=dataclasses.replace(exp.model, filters=4, depth=2, dropout=0.0,
                                  compute_dtype="float16"),
        train=dataclasses.replace(
            exp.train, batch_size=4, steps_per_epoch=STEPS_PER_EPOCH, epochs=6,
            log_every=1, xla="off", early_stopping=PATIENCE,
            class_weights="1e30,1e30"))


def latest_step(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt"))
    return int(tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


class HostLoopTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.data, ignore_errors=True)
        prepare.prepare("synthetic", None, cls.data, image_size=32, limit=16)

    def test_early_stopping_stops_after_patience_epochs_and_resume_stays_stopped(self):
        model_dir = _tmpdir(self)
        summary = loop.train(frozen_experiment(), model_dir, self.data)
        scores = [record["score"] for record in summary["history"]]
        self.assertLen(scores, PATIENCE + 1)  # of 6 epochs
        self.assertEqual(len(set(scores)), 1, scores)  # the premise: nothing improved
        self.assertEqual(summary["steps"], (PATIENCE + 1) * STEPS_PER_EPOCH)
        self.assertEqual(summary["best_step"], STEPS_PER_EPOCH)  # the first is best
        with open(os.path.join(model_dir, "ckpt", "validation.json")) as f:
            record = json.load(f)
        self.assertTrue(record["stopped"])
        self.assertEqual(record["step"], summary["steps"])
        resumed = loop.train(frozen_experiment(), model_dir, self.data, resume=True)
        self.assertEqual(resumed["steps"], summary["steps"])
        self.assertEqual(resumed["history"], summary["history"])
        self.assertEqual(latest_step(model_dir), summary["steps"])

    def test_ctrl_c_saves_a_checkpoint_and_resume_continues_from_it(self):
        model_dir = _tmpdir(self)
        args = [sys.executable, os.path.join(REPO, "bin", "train"),
                f"--model_dir={model_dir}", f"--data_dir={self.data}",
                "--dataset=synthetic", "--filters=4", "--depth=2", "--batch_size=4",
                "--steps_per_epoch=16", "--epochs=1", "--log_every=1", "--xla=off",
                "--dtype=float32"]
        # A shell's background job ignores SIGINT, and Python keeps an ignored SIGINT
        # ignored: the child gets the default disposition, as from a terminal.
        child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, preexec_fn=lambda: signal.signal(
                                     signal.SIGINT, signal.SIG_DFL))
        lines, reached = [], None
        for line in child.stdout:  # the progress line of a step: training is under way
            lines.append(line)
            match = re.search(r"step (\d+)/16 \[", line)
            if match and reached is None:
                reached = int(match[1])
            if match:
                # A step logged after a SIGINT means it was not taken yet: send
                # another. None is sent once the interrupt is taken (no step is logged
                # then), so none hits the save.
                child.send_signal(signal.SIGINT)
        output = "".join(lines) + child.communicate(timeout=600)[0]
        self.assertIsNotNone(reached, output)
        self.assertNotEqual(child.returncode, 0, output)
        saved = re.search(r"interrupted: saved (\S+)", output)
        self.assertIsNotNone(saved, output)
        step = latest_step(model_dir)
        self.assertBetween(step, reached, 15)  # where the child was when it stopped
        self.assertEqual(saved[1], os.path.join(model_dir, "ckpt", f"ckpt-{step}"))
        self.assertEqual(tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt")),
                         saved[1])
        resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True,
                                 timeout=600, check=False)
        output = resumed.stdout + resumed.stderr
        self.assertEqual(resumed.returncode, 0, output)
        self.assertIn(f"resumed from {saved[1]} at step {step}", output)
        self.assertRegex(output, rf"step {step + 1}/16 \[")  # no step is done twice
        self.assertNotRegex(output, rf"step {step}/16 \[")
        with open(os.path.join(model_dir, "summary.json")) as f:
            self.assertEqual(json.load(f)["steps"], 16)


if __name__ == "__main__":
    tf.test.main()
