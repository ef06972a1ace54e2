"""kill -9 of bin/train at any moment leaves a model directory that --resume finishes
exactly: the same final parameters, validation history, best checkpoint, threshold and
export as a run that was never interrupted.

The kills are SIGKILLs the child sends itself at named points (`r2u.training.faults`), not timed
from outside: each run of the test stops at the same instruction.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from r2u.training import faults
from r2u.training import run_record
from r2u.data import prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--dataset=synthetic", "--filters=4", "--depth=2", "--batch_size=4",
        "--steps_per_epoch=2", "--epochs=3", "--log_every=1", "--xla=off", "--dtype=float32"]


def run_train(model_dir, data_dir, *extra, fault=None):
    """bin/train in a child process; `fault` ("point:n") makes it SIGKILL itself there.

    Returns the finished process with its output as `.output`."""
    cmd = [sys.executable, os.path.join(REPO, "bin", "train"), f"--model_dir={model_dir}",
           f"--data_dir={data_dir}", *ARGS, *extra]
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if fault:
        env[faults.ENV] = fault
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    proc.output, _ = proc.communicate(timeout=600)
    expected = -signal.SIGKILL if fault else 0
    assert proc.returncode == expected, (proc.returncode, proc.output[-3000:])
    return proc


def final_weights(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
        os.path.join(model_dir, "ckpt")))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith("model/"))
    assert names, sorted(reader.get_variable_to_shape_map())  # else nothing is compared
    return {n: reader.get_tensor(n) for n in names}


def read_summary(model_dir):
    with open(os.path.join(model_dir, "summary.json")) as f:
        return json.load(f)


class CrashTest(tf.test.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data = tempfile.mkdtemp()
        prepare.prepare("synthetic", None, cls.data, image_size=32, limit=16)
        cls.straight = tempfile.mkdtemp()
        run_train(cls.straight, cls.data)

    def assert_same_run(self, crashed):
        """Final parameters, summary (history included) and export match `straight`."""
        a, b = final_weights(self.straight), final_weights(crashed)
        self.assertEqual(list(a), list(b))
        for name in a:  # CPU, fixed seed: the same arithmetic, tolerance for op ordering
            np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)
        want, got = read_summary(self.straight), read_summary(crashed)
        for key in ("steps", "best_step", "threshold", "headline"):
            self.assertEqual(want[key], got[key], key)
        self.assertEqual([(r["epoch"], r["step"], r["threshold"]) for r in want["history"]],
                         [(r["epoch"], r["step"], r["threshold"]) for r in got["history"]])
        self.assertLen(want["history"], 3)
        for w, g in zip(want["history"], got["history"]):
            w, g = run_record.flatten(w), run_record.flatten(g)
            self.assertEqual(sorted(w), sorted(g))
            for key in w:
                if isinstance(w[key], float):
                    self.assertAllClose(w[key], g[key], atol=1e-6, msg=key)
                else:
                    self.assertEqual(w[key], g[key], key)
        with open(os.path.join(crashed, "best.json")) as f:
            self.assertEqual(json.load(f)["step"], want["best_step"])
        image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)),
                            tf.float32)
        # A loaded SavedModel's functions fail once the object is collected: keep both.
        loaded = [tf.saved_model.load(os.path.join(d, "export"))
                  for d in (self.straight, crashed)]
        self.assertAllClose(loaded[0].serve(image), loaded[1].serve(image), atol=1e-6)

    def test_kill_9_at_each_end_of_epoch_write_then_resume_matches(self):
        # Epochs end at steps 2, 4 and 6. Each run is killed at another point of an
        # epoch's end, and the next resumes from what it left:
        crashed = tempfile.mkdtemp()
        # 1. step 2: after the best checkpoint and best.json, before the record.
        first = run_train(crashed, self.data, fault="after_best_save:1")
        self.assertIn("killing this process (SIGKILL) at after_best_save", first.output)
        self.assertEqual(tf.train.latest_checkpoint(os.path.join(crashed, "best")),
                         os.path.join(crashed, "best", "ckpt-2"))
        # 2. step 4: after the latest checkpoint, before validation.
        second = run_train(crashed, self.data, "--resume", fault="after_latest_save:1")
        self.assertIn("validating step 2 again", second.output)
        self.assertEqual(tf.train.latest_checkpoint(os.path.join(crashed, "ckpt")),
                         os.path.join(crashed, "ckpt", "ckpt-4"))
        # 3. step 6: after validation (the second of this run), before the best decision.
        third = run_train(crashed, self.data, "--resume", fault="after_validation:2")
        self.assertIn("validating step 4 again", third.output)
        self.assertIn("killing this process (SIGKILL) at after_validation", third.output)
        self.assertFalse(os.path.exists(os.path.join(crashed, "export")))
        last = run_train(crashed, self.data, "--resume")
        self.assertIn("validating step 6 again", last.output)
        self.assert_same_run(crashed)


if __name__ == "__main__":
    tf.test.main()
