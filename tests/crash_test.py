"""kill -9 of bin/train at any moment leaves a model directory that --resume finishes
exactly: the same final parameters as a run that was never interrupted."""

import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from r2u.data import prepare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--dataset=synthetic", "--filters=4", "--depth=2", "--batch_size=4",
        "--steps_per_epoch=2", "--epochs=3", "--log_every=1", "--xla=off", "--dtype=float32"]


def run_train(model_dir, data_dir, *extra, wait=True):
    cmd = [sys.executable, os.path.join(REPO, "bin", "train"), f"--model_dir={model_dir}",
           f"--data_dir={data_dir}", *ARGS, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if wait:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    return proc


def final_weights(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
        os.path.join(model_dir, "ckpt")))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith("model/"))
    return {n: reader.get_tensor(n) for n in names}


class CrashTest(tf.test.TestCase):

    def test_kill_9_then_resume_matches_an_uninterrupted_run(self):
        data = tempfile.mkdtemp()
        prepare.prepare("synthetic", None, data, image_size=32, limit=16)
        straight, crashed = tempfile.mkdtemp(), tempfile.mkdtemp()
        run_train(straight, data)
        proc = run_train(crashed, data, wait=False)
        ckpt_dir = os.path.join(crashed, "ckpt")
        deadline = time.time() + 300
        # Kill right after the first checkpoint appears: mid-epoch-2, possibly mid-write.
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(ckpt_dir) and any(n.startswith("ckpt-") for n in
                                                os.listdir(ckpt_dir)):
                break
            time.sleep(0.05)
        self.assertIsNone(proc.poll(), "training ended before it could be killed")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self.assertEqual(proc.returncode, -signal.SIGKILL)
        self.assertFalse(os.path.exists(os.path.join(crashed, "export")))
        run_train(crashed, data, "--resume")
        a, b = final_weights(straight), final_weights(crashed)
        self.assertEqual(list(a), list(b))
        for name in a:  # CPU, fixed seed: the same arithmetic, tolerance for op ordering
            np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)
        self.assertTrue(os.path.exists(os.path.join(crashed, "export", "saved_model.pb")))


if __name__ == "__main__":
    tf.test.main()
