"""The wheel: `pip install` gives a working r2u and the six r2u-* console scripts.

Marked `packaging` (`pytest -m packaging`, `make test-packaging`). The wheel is built
with pip from a copy of the sources and installed, without dependencies, into a
temporary venv that sees this interpreter's site-packages (TensorFlow is not
downloaded again) after its own; the commands run from a folder outside the checkout, so
what runs is the installed r2u.
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import pytest
import tensorflow as tf

from r2u import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("r2u-prepare", "r2u-train", "r2u-evaluate", "r2u-predict", "r2u-bench",
           "r2u-launch-local")


def _run(cmd, cwd, timeout=300):
    # As a user's shell would have it: no path of the checkout, no log level of conftest.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def build_wheel(root: str) -> str:
    """Builds the wheel from a copy of the package's files: the checkout stays as it is."""
    src = os.path.join(root, "src")
    shutil.copytree(os.path.join(REPO, "r2u"), os.path.join(src, "r2u"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src)
    dist = os.path.join(root, "dist")
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                 "--disable-pip-version-check", "-w", dist, src], cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (wheel,) = glob.glob(os.path.join(dist, "r2u-*.whl"))
    return wheel


def make_venv(root: str, wheel: str) -> str:
    """A venv holding the wheel, then this interpreter's site-packages (a .pth file: a
    venv made with --system-site-packages would see the base Python's, not ours)."""
    venv = os.path.join(root, "venv")
    proc = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    assert proc.returncode == 0, proc.stderr
    python = os.path.join(venv, "bin", "python")
    # Installed before the .pth exists, so pip sees an empty environment.
    proc = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                 "--no-index", "--quiet", "--disable-pip-version-check", wheel], cwd=root)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                cwd=root).stdout.strip()
    with open(os.path.join(site, "zz_parent_site_packages.pth"), "w") as f:
        f.write(sysconfig.get_path("purelib") + "\n")
    return venv


@pytest.mark.packaging
class WheelTest(tf.test.TestCase):

    def test_installed_wheel_trains_and_has_the_console_scripts(self):
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        venv = make_venv(root, build_wheel(root))
        bin_dir = os.path.join(venv, "bin")
        work = os.path.join(root, "work")  # outside the checkout: no r2u/ beside it
        os.makedirs(work)
        found = _run([os.path.join(bin_dir, "python"), "-c",
                      "import r2u, r2u.cli; print(r2u.__file__)"], cwd=work)
        self.assertEqual(found.returncode, 0, found.stderr[-3000:])
        installed = os.path.realpath(found.stdout.strip())
        self.assertStartsWith(installed, os.path.realpath(venv) + os.sep)
        for name in SCRIPTS:
            self.assertTrue(os.access(os.path.join(bin_dir, name), os.X_OK), name)
        # --help (absl exits 1 after it) shows the program's doc and flags: one
        # program without TensorFlow, one with.
        launch = _run([os.path.join(bin_dir, "r2u-launch-local"), "--help"], cwd=work)
        self.assertIn("Starts N copies of the command", launch.stdout, launch.stderr)
        self.assertIn("--workers", launch.stdout)
        prepare = _run([os.path.join(bin_dir, "r2u-prepare"), "--help"], cwd=work)
        self.assertIn("TFRecord shards", prepare.stdout, prepare.stderr[-3000:])
        self.assertIn("--out_dir", prepare.stdout)
        self.assertIn("--[no]tf_logs", prepare.stdout)
        model_dir = os.path.join(root, "run")
        train = _run([os.path.join(bin_dir, "r2u-train"), "--dataset=synthetic",
                      "--steps=4", "--steps_per_epoch=2", "--batch_size=4", "--filters=4",
                      "--depth=2", f"--model_dir={model_dir}"], cwd=work)
        self.assertEqual(train.returncode, 0, train.stderr[-3000:])
        self.assertIn("SavedModel in", train.stdout)
        self.assertTrue(os.path.isfile(os.path.join(model_dir, "export",
                                                    "saved_model.pb")))
        # The console stays r2u's: no TensorFlow C++ log line, no oneDNN banner.
        self.assertNotRegex(train.stderr, r"(?m)^[IWE]0000 |oneDNN custom operations")
        self.assertIn("step 4/4", train.stderr)


class CliSetupTest(tf.test.TestCase):
    """What the programs do before TensorFlow loads, and what `import r2u` does not."""

    def test_tf_logs_is_read_from_the_command_line_like_absl(self):
        wanted = cli.tf_logs_requested
        self.assertFalse(wanted(["prog"]))
        self.assertTrue(wanted(["prog", "--steps=2", "--tf_logs"]))
        self.assertTrue(wanted(["prog", "-tf_logs=true"]))
        self.assertFalse(wanted(["prog", "--tf_logs", "--notf_logs"]))
        self.assertFalse(wanted(["prog", "--tf_logs=false"]))
        self.assertFalse(wanted(["prog", "--", "--tf_logs"]))  # a worker's flag

    def test_load_noise_is_only_tensorflow_info_and_warning_lines(self):
        noise = [
            "WARNING: All log messages before absl::InitializeLog() is called are "
            "written to STDERR",
            "I0000 00:00:1796131140.400083   11913 port.cc:153] oneDNN custom operations "
            "are on.",
            "W0000 00:00:1796131168.984090   11913 cache_dataset_ops.cc:912] The calling",
        ]
        kept = ["E0000 00:00:1796131145.787484   11913 cuda_platform.cc:52] failed",
                "I1201 13:19:05.792305 139895782288256 devices.py:52] dtype=auto",
                "Traceback (most recent call last):", "UserWarning: numpy"]
        for line in noise:
            self.assertTrue(cli._LOAD_NOISE.fullmatch(line), line)
        for line in kept:
            self.assertFalse(cli._LOAD_NOISE.fullmatch(line), line)

    def test_import_r2u_sets_no_environment_variable(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("TF_ENABLE_ONEDNN", "TF_CPP"))}
        proc = subprocess.run(
            [sys.executable, "-c", "import os, r2u, r2u.cli, sys; "
             "print([k for k in ('TF_ENABLE_ONEDNN_OPTS', 'TF_CPP_MIN_LOG_LEVEL') "
             "if k in os.environ], 'tensorflow' in sys.modules)"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.strip(), "[] False")


if __name__ == "__main__":
    tf.test.main()
