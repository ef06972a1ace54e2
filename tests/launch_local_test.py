"""bin/launch_local, and bin/train under MultiWorkerMirroredStrategy with 2 local workers.

The launcher tests run tiny Python commands as workers. The end-to-end test trains with
2 workers on 127.0.0.1 (4 steps of a 4-filter U-Net on 16 synthetic 32x32 images in 4
shards), kills the non-chief with SIGKILL once the chief's first checkpoint exists, and
restarts the job with --resume.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import tensorflow as tf

from r2u.data import prepare

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LAUNCH = os.path.join(_ROOT, "bin", "launch_local")
_TRAIN = os.path.join(_ROOT, "bin", "train")


def launch(workers, *command, extra=()):
    """Runs the launcher to completion: (exit code, output lines)."""
    done = subprocess.run([sys.executable, _LAUNCH, f"--workers={workers}", *extra, "--",
                           *command], capture_output=True, text=True, timeout=600,
                          check=False)
    return done.returncode, (done.stdout + done.stderr).splitlines()


def python(code):
    return (sys.executable, "-c", code)


class LaunchLocalTest(tf.test.TestCase):

    def test_each_worker_gets_its_tf_config_and_prefixed_output(self):
        code, lines = launch(3, *python(
            "import json, os; print(json.dumps(json.loads(os.environ['TF_CONFIG'])))"))
        self.assertEqual(code, 0, msg="\n".join(lines))
        configs = {}
        for line in lines:
            match = re.fullmatch(r"\[worker (\d)\] (\{.*\})", line)
            if match:
                configs[int(match[1])] = json.loads(match[2])
        self.assertLen(configs, 3)
        cluster = configs[0]["cluster"]["worker"]
        self.assertLen(set(cluster), 3)
        for address in cluster:
            self.assertRegex(address, r"^127\.0\.0\.1:\d+$")
        for index, config in configs.items():
            self.assertEqual(config, {"cluster": {"worker": cluster},
                                      "task": {"type": "worker", "index": index}})
        self.assertIn("[launch_local] all workers finished", lines)

    def test_port_base(self):
        code, lines = launch(2, *python("import os; print(os.environ['TF_CONFIG'])"),
                             extra=["--port_base=23456"])
        self.assertEqual(code, 0, msg="\n".join(lines))
        worker_0 = next(l for l in lines if l.startswith("[worker 0] {"))
        self.assertEqual(json.loads(worker_0[len("[worker 0] "):])["cluster"]["worker"],
                         ["127.0.0.1:23456", "127.0.0.1:23457"])

    def test_a_python_script_runs_with_this_interpreter(self):
        script = os.path.join(tempfile.mkdtemp(), "script")  # not executable, like a copy
        with open(script, "w") as f:
            f.write("#!/usr/bin/env python3\nimport sys\nprint(sys.executable)\n")
        code, lines = launch(1, script)
        self.assertEqual(code, 0, msg="\n".join(lines))
        self.assertIn(f"[worker 0] {sys.executable}", lines)

    def test_a_failing_worker_stops_the_others(self):
        code, lines = launch(2, *python(
            "import json, os, sys, time\n"
            "if json.loads(os.environ['TF_CONFIG'])['task']['index'] == 1:\n"
            "    sys.exit(3)\n"
            "print('waiting', flush=True); time.sleep(120); print('not stopped')"))
        self.assertEqual(code, 3, msg="\n".join(lines))
        self.assertIn("[launch_local] worker 1 exited with code 3: stopping the others",
                      lines)
        self.assertNotIn("[worker 0] not stopped", lines)

    def test_ctrl_c_is_forwarded_to_every_worker(self):
        worker = ("import signal, sys, time\n"
                  "def stop(signum, frame):\n"
                  "    print('got SIGINT', flush=True); sys.exit(0)\n"
                  "signal.signal(signal.SIGINT, stop)\n"
                  "print('ready', flush=True); time.sleep(120)")
        proc = subprocess.Popen([sys.executable, _LAUNCH, "--workers=2", "--",
                                 *python(worker)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(120, proc.kill)
        watchdog.start()
        lines = []
        try:
            while sum(l.endswith("] ready") for l in lines) < 2:
                line = proc.stdout.readline()
                self.assertTrue(line, msg="\n".join(lines))
                lines.append(line.rstrip("\n"))
            proc.send_signal(signal.SIGINT)
            lines += proc.stdout.read().splitlines()
            code = proc.wait()
        finally:
            watchdog.cancel()
        self.assertEqual(code, 128 + signal.SIGINT, msg="\n".join(lines))
        self.assertIn("[worker 0] got SIGINT", lines)
        self.assertIn("[worker 1] got SIGINT", lines)


class MultiWorkerTrainTest(tf.test.TestCase):

    def _train_command(self, data_dir, model_dir, *extra):
        return [_TRAIN, "--strategy=multi_worker", f"--data_dir={data_dir}",
                f"--model_dir={model_dir}", "--arch=unet", "--filters=4", "--depth=2",
                "--batch_size=4", "--steps_per_epoch=2", "--epochs=2", "--log_every=1",
                "--xla=off", "--dtype=float32", *extra]

    def _kill_worker_1_after_the_first_checkpoint(self, command, model_dir, log):
        """Runs the job until the chief's first checkpoint, then SIGKILLs worker 1."""
        proc = subprocess.Popen([sys.executable, _LAUNCH, "--workers=2", "--", *command],
                                stdout=log, stderr=subprocess.STDOUT)
        state = os.path.join(model_dir, "ckpt", "checkpoint")
        deadline = time.monotonic() + 400
        while not os.path.exists(state):
            self.assertIsNone(proc.poll(), msg=_read(log.name))
            self.assertLess(time.monotonic(), deadline, msg=_read(log.name))
            time.sleep(0.1)
        pid = int(re.search(r"\[launch_local\] worker 1: pid (\d+)", _read(log.name))[1])
        os.kill(pid, signal.SIGKILL)
        return proc.wait(timeout=120)

    def test_two_workers_train_survive_a_killed_worker_and_resume(self):
        root = tempfile.mkdtemp()
        data_dir, model_dir = os.path.join(root, "data"), os.path.join(root, "model")
        prepare.prepare("synthetic", None, data_dir, image_size=32, limit=16, num_shards=4)
        command = self._train_command(data_dir, model_dir)
        with open(os.path.join(root, "run1.log"), "w") as log:
            code = self._kill_worker_1_after_the_first_checkpoint(command, model_dir, log)
        first = _read(log.name)
        self.assertEqual(code, 128 + signal.SIGKILL, msg=first)
        self.assertIn("[launch_local] worker 1 exited with code -9: stopping the others",
                      first)
        # Killed mid-run: the chief had saved step 2 of 4, and had not finished.
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt"))
        self.assertEqual(latest, os.path.join(model_dir, "ckpt", "ckpt-2"), msg=first)
        self.assertFalse(os.path.exists(os.path.join(model_dir, "export")))
        self.assertTrue(os.path.isdir(os.path.join(model_dir, ".worker-1")))  # killed

        code, lines = launch(2, *command, "--resume")
        second = "\n".join(lines)
        self.assertEqual(code, 0, msg=second)
        for worker in range(2):  # every worker restored the chief's checkpoint
            self.assertRegex(second, rf"\[worker {worker}\] .*resumed from "
                                     rf"{re.escape(latest)} at step 2", msg=second)
        with open(os.path.join(model_dir, "summary.json")) as f:
            self.assertEqual(json.load(f)["steps"], 4)
        self.assertEqual(tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt")),
                         os.path.join(model_dir, "ckpt", "ckpt-4"))
        # Only the chief wrote to model_dir; the non-chief's private folder is gone.
        self.assertCountEqual(os.listdir(model_dir), [
            "best", "best.json", "ckpt", "config.json", "export", "plan.json",
            "summary.json", "tb"])
        # The workers read disjoint halves of the 4 training shards, in both runs.
        for log_text in (first, second):
            shards = [set(re.search(rf"\[worker {w}\] .*input pipeline {w} of 2 reads "
                                    r"(\S+)", log_text)[1].split(",")) for w in range(2)]
            self.assertEmpty(shards[0] & shards[1])
            self.assertLen(shards[0] | shards[1], 4)
        # Same global loss on both workers at every step: one training, two replicas.
        losses = [re.findall(rf"\[worker {w}\] .*step (\d)/4 .* loss (\S+)", second)
                  for w in range(2)]
        self.assertEqual(losses[0], [("3", losses[0][0][1]), ("4", losses[0][1][1])])
        self.assertEqual(losses[0], losses[1])


def _read(path):
    with open(path) as f:
        return f.read()


if __name__ == "__main__":
    tf.test.main()
