"""Run a test file again in a fresh Python process (for tests that must configure
TensorFlow's devices before it initialises them, such as 2 logical CPUs)."""

import os
import subprocess
import sys


def run_file_in_child(test_case, file: str, env_var: str, expected: str,
                      timeout: int = 900) -> None:
    """Runs pytest on `file` with `env_var=1`; asserts its summary starts with `expected`
    (e.g. "3 passed") and has nothing skipped or failed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, **{env_var: "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         os.path.abspath(file)],
        cwd=root, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    output = child.stdout + child.stderr
    test_case.assertEqual(child.returncode, 0, msg=output)
    summary = output.strip().splitlines()[-1]
    test_case.assertRegex(summary, rf"^{expected}", msg=output)
    test_case.assertNotRegex(summary, r"skipped|failed|error", msg=output)
