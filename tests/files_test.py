"""r2u.files: whole files or nothing, no temporary left behind, safe on failure."""

import json
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from r2u import files


class WriteTest(tf.test.TestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.path = os.path.join(self.dir, "out.json")

    def assertOnly(self, *names):
        self.assertCountEqual(os.listdir(self.dir), names)  # no temporary file left

    def test_write_atomic_writes_the_bytes(self):
        files.write_atomic(self.path, b"first")
        files.write_atomic(self.path, b"second")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"second")
        self.assertOnly("out.json")

    def test_write_json_formats_as_asked(self):
        value = {"b": [1, 2], "a": 0.5}
        files.write_json(self.path, value)
        with open(self.path) as f:
            self.assertEqual(f.read(), json.dumps(value, indent=2, sort_keys=True))
        files.write_json(self.path, value, indent=1, sort_keys=False, newline=True)
        with open(self.path) as f:
            self.assertEqual(f.read(), '{\n "b": [\n  1,\n  2\n ],\n "a": 0.5\n}\n')
        self.assertOnly("out.json")

    def test_a_value_json_cannot_serialise_leaves_the_old_file(self):
        files.write_json(self.path, {"ok": 1})
        with self.assertRaisesRegex(ValueError, "Out of range float"):
            files.write_json(self.path, {"bad": float("nan")}, allow_nan=False)
        with self.assertRaises(TypeError):
            files.write_json(self.path, {"bad": object()})
        with open(self.path) as f:
            self.assertEqual(json.load(f), {"ok": 1})
        self.assertOnly("out.json")

    def test_a_failure_midway_leaves_the_old_file_and_no_temporary(self):
        files.write_atomic(self.path, b"old")
        with self.assertRaises(TypeError):  # the temporary file exists when it fails
            files.write_atomic(self.path, "text, not bytes")
        with self.assertRaisesRegex(RuntimeError, "stop"):
            with files.replacing(self.path) as temp:
                with open(temp, "wb") as f:
                    f.write(b"half")
                raise RuntimeError("stop")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertOnly("out.json")

    def test_an_unwritable_target_is_named(self):
        missing = os.path.join(self.dir, "no", "such", "x.json")
        with self.assertRaisesRegex(OSError, f"^{re.escape(missing)}: cannot write"):
            files.write_json(missing, {})
        folder = os.path.join(self.dir, "folder")
        os.mkdir(folder)  # os.replace cannot put a file where a folder is
        with self.assertRaisesRegex(OSError, f"^{re.escape(folder)}: cannot write"):
            files.write_atomic(folder, b"x")
        self.assertOnly("folder")

    def test_a_link_is_replaced_not_written_through(self):
        target = os.path.join(self.dir, "precious")
        files.write_atomic(target, b"keep")
        os.symlink(target, self.path)
        files.write_atomic(self.path, b"new")
        self.assertFalse(os.path.islink(self.path))
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"keep")

    def test_write_png_round_trip(self):
        pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
        path = os.path.join(self.dir, "x.png")
        files.write_png(path, pixels)
        with open(path, "rb") as f:
            self.assertAllEqual(tf.io.decode_png(f.read()).numpy()[..., 0], pixels)
        self.assertOnly("x.png")


if __name__ == "__main__":
    tf.test.main()
