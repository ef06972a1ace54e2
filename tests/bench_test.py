"""Tests of r2u.bench and bin/bench: counted FLOPs against hand counts, a CLI smoke run.

No timing assertions: the numbers depend on the machine and its load.
"""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

import tensorflow as tf

from r2u import bench
from r2u import devices
from r2u.nn import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_KEYS = ("arch", "dtype", "xla", "image_size", "channels", "batch_size", "params",
               "gflop_per_image", "compile_s", "train_img_s", "train_img_s_spread",
               "infer_img_s", "gflop_s", "peak_fraction", "rss_mb")


def conv_flops(h, w, k, cin, cout):
    return 2 * h * w * k * k * cin * cout


class FlopsTest(tf.test.TestCase):

    def test_forward_gflop_matches_hand_count_of_tiny_unet(self):
        # depth 1, filters 4, 8x8x1 input: enc_0 at 8x8, bottleneck at 4x4, up_0 is a
        # 3x3 transposed conv 8 -> 4 channels from 4x4 to 8x8, dec_0 at 8x8, 1x1 head.
        model = models.build("unet", in_channels=1, filters=4, depth=1)
        expected = (conv_flops(8, 8, 3, 1, 4) + conv_flops(8, 8, 3, 4, 4)     # enc_0
                    + conv_flops(4, 4, 3, 4, 8) + conv_flops(4, 4, 3, 8, 8)   # bottom
                    + conv_flops(4, 4, 3, 8, 4)                               # up_0
                    + conv_flops(8, 8, 3, 8, 4) + conv_flops(8, 8, 3, 4, 4)   # dec_0
                    + conv_flops(8, 8, 1, 4, 2))                              # head
        self.assertEqual(expected, 116224)
        self.assertAllClose(bench.forward_gflop(model, 8, 1), expected / 1e9)

    def test_recurrent_block_counts_each_shared_conv_application(self):
        # r2unet, depth 1, t=2: a block is a 1x1 projection, then 2 units x 3 convs.
        model = models.build("r2unet", in_channels=1, filters=4, depth=1, t=2)
        block = lambda h, cin, cout: (conv_flops(h, h, 1, cin, cout)
                                      + 6 * conv_flops(h, h, 3, cout, cout))
        expected = (block(8, 1, 4) + block(4, 4, 8) + conv_flops(4, 4, 3, 8, 4)
                    + block(8, 8, 4) + conv_flops(8, 8, 1, 4, 2))
        self.assertAllClose(bench.forward_gflop(model, 8, 1), expected / 1e9)

    def test_both_gradients_of_a_conv_cost_what_the_conv_costs(self):
        def step(x, w):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = tf.nn.conv2d(x, w, 1, "SAME")
            return tape.gradient(y, [x, w])
        graph = tf.function(step).get_concrete_function(
            tf.TensorSpec([2, 6, 5, 3], tf.float32), tf.TensorSpec([3, 3, 3, 4],
                                                                  tf.float32)).graph
        counted = {op.type: bench.op_flops(op) for op in graph.get_operations()
                   if op.type in bench.FLOP_OPS}
        one = 2 * conv_flops(6, 5, 3, 3, 4)  # batch 2
        self.assertEqual(counted, {"Conv2D": one, "Conv2DBackpropInput": one,
                                   "Conv2DBackpropFilter": one})

    def test_matmul_and_transposed_matmul(self):
        a = tf.TensorSpec([3, 5], tf.float32)
        b = tf.TensorSpec([5, 7], tf.float32)
        graph = tf.function(tf.matmul).get_concrete_function(a, b).graph
        self.assertEqual(bench.graph_flops(graph), 2 * 3 * 5 * 7)
        at = tf.TensorSpec([5, 3], tf.float32)
        graph = tf.function(lambda x, y: tf.matmul(x, y, transpose_a=True)
                            ).get_concrete_function(at, b).graph
        self.assertEqual(bench.graph_flops(graph), 2 * 3 * 5 * 7)

    def test_time_fn_reports_median_and_spread(self):
        # A fake clock that only the timed function advances: warm-up calls take 100 s
        # (must not count), then 4 blocks of 3 calls at 1, 5, 2 and 3 s per call.
        clock = [0.0]
        durations = [100.0, 100.0, 1, 1, 1, 4, 5, 6, 2, 2, 2, 3, 3, 3]
        def fn():
            clock[0] += durations.pop(0)
            return tf.constant(1.0)
        with mock.patch.object(bench.time, "perf_counter", lambda: clock[0]):
            out = bench.time_fn(fn, warmup=2, steps=3, repeats=4)
        self.assertEqual(durations, [])  # 2 + 3 * 4 calls
        self.assertEqual(out, {"median": 2.5, "spread": [1.0, 5.0],
                               "all": [1.0, 5.0, 2.0, 3.0]})

    def test_op_share_rows_of_a_fixed_profile(self):
        micros = {"Relu": 75000, "Conv2D": 600000, "AddV2": 25000,
                  "Conv2DBackpropFilter": 300000}
        calls = {"Relu": 4, "Conv2D": 8, "AddV2": 2, "Conv2DBackpropFilter": 6}
        flops = {"Conv2D": 2_400_000_000, "Conv2DBackpropFilter": 900_000_000}
        rows = bench.op_share_rows(micros, calls, flops, steps=2, top=3)
        # Shares are of all kernel time (AddV2, not listed, holds the missing 2.5%).
        self.assertEqual(rows, [
            "Conv2D".ljust(32) + "  60.0%    300.0      4      4.0",
            "Conv2DBackpropFilter".ljust(32) + "  30.0%    150.0      3      3.0",
            "Relu".ljust(32) + "   7.5%     37.5      2         "])


class CliTest(tf.test.TestCase):

    def test_tiny_run_writes_documented_json(self):
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "bench.json")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bin", "bench"), "--archs=unet",
             "--image_size=32", "--batch_size=2", "--filters=4", "--depth=2",
             "--steps=2", "--repeats=1",  # dtypes and xla: auto, as bin/train
             "--steps_per_call=1,2", f"--json={path}", "--peers=torch",
             f"--peers_dir={self.get_temp_dir()}"],
            capture_output=True, text=True, env=env, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(path) as f:
            out = json.load(f)
        for key in ("machine", "config", "peaks", "results", "peers", "ratios"):
            self.assertIn(key, out)
        self.assertIn("cpu", out["machine"])
        self.assertEqual([r["steps_per_call"] for r in out["results"]], [1, 2])
        self.assertGreater(out["results"][1]["train_img_s"], 0)
        record = out["results"][0]
        self.assertEqual(record["dtype"], devices.resolve_dtype("auto"))
        self.assertEqual(record["xla"], "on" if devices.resolve_xla("auto") else "off")
        self.assertIn(record["dtype"], out["peaks"])
        for key in RESULT_KEYS:
            self.assertIn(key, record)
        self.assertEqual(record["arch"], "unet")
        tiny = models.build("unet", filters=4, depth=2)
        self.assertEqual(record["params"], models.parameter_count(tiny))
        self.assertAllClose(record["gflop_per_image"], bench.forward_gflop(tiny, 32, 1))
        self.assertGreater(record["train_img_s"], 0)
        # A peer without its venv is reported, not skipped.
        self.assertLen(out["peers"], 1)
        self.assertEqual(out["peers"][0]["peer"], "torch")
        self.assertIn("setup.sh torch", out["peers"][0]["error"])
        self.assertIn("NOT RUN", proc.stdout)
        self.assertEqual(out["ratios"], {})
        self.assertIn("train img/s", proc.stdout)
        self.assertFalse([n for n in os.listdir(os.path.dirname(path)) if "tmp" in n])

    def test_steps_per_call_below_one_is_refused(self):
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bin", "bench"), "--archs=unet",
             "--steps_per_call=1,0"], capture_output=True, text=True, timeout=300)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("--steps_per_call must be >= 1", proc.stderr)


class ScalingCliTest(tf.test.TestCase):

    def test_tiny_sweep_writes_one_record_per_point_and_the_tiling_comparison(self):
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "scaling.json")
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "scaling.py"),
             "--arch=unet", "--image_sizes=16,32", "--size_batch=1", "--batch_sizes=2",
             "--batch_image_size=16", "--steps=1", "--repeats=1", "--whole=20,24",
             "--tile=16", "--stride=8", f"--json={path}"],
            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
            timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        with open(path) as f:
            out = json.load(f)
        self.assertEqual([(r["image_size"], r["batch_size"]) for r in
                          out["image_size_sweep"] + out["batch_size_sweep"]],
                         [(16, 1), (32, 1), (16, 2)])
        for record in out["image_size_sweep"] + out["batch_size_sweep"]:
            self.assertGreater(record["train_img_s"], 0)
            self.assertGreater(record["rss_mb"], 0)
        whole = out["whole_image"]
        self.assertEqual((whole["height"], whole["width"], whole["tile"]), (20, 24, 16))
        self.assertGreater(whole["num_tiles"], 1)
        table = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "tables.py"),
                                "scaling", path], capture_output=True, text=True, check=True)
        self.assertEqual(table.stdout.count("\n| image | "), 2)  # a row per swept size
        self.assertIn(f"{whole['num_tiles']:,} tiles of 16x16, stride 8", table.stdout)


class OpProfileCliTest(tf.test.TestCase):

    def test_lists_the_conv_kernels_with_their_rates(self):
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "op_profile.py"),
             "--arch=unet", "--image_size=16", "--batch_size=1", "--steps=1",
             "--top=1000"],
            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
            timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        rows = [l.split() for l in proc.stdout.splitlines() if "%" in l]
        self.assertTrue(rows, proc.stdout)
        # --top=1000 lists every op type: the shares, each rounded to 0.1, add up to
        # 100 within the rounding, in decreasing order; the ms/step column adds up to
        # the header's kernel time per step within its rounding.
        shares = [float(r[1].rstrip("%")) for r in rows]
        self.assertEqual(shares, sorted(shares, reverse=True))
        self.assertAllClose(sum(shares), 100.0, rtol=0, atol=0.05 * len(rows) + 1e-9)
        per_step = float(proc.stdout.split("kernel time summed over threads ")[1].split()[0])
        self.assertAllClose(sum(float(r[2]) for r in rows) / 1e3, per_step, rtol=0,
                            atol=0.005 + 0.05e-3 * len(rows) + 1e-9)
        # Forward conv and filter gradient are listed with a counted GFLOP/s.
        rated = {r[0] for r in rows if len(r) == 5 and float(r[4]) > 0}
        self.assertTrue(any("Conv2DBackpropFilter" in n for n in rated), proc.stdout)
        self.assertTrue(any(n.endswith("Conv2D") for n in rated), proc.stdout)


class LeverScriptsTest(tf.test.TestCase):

    def run_script(self, name, *args):
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "benchmarks", "levers", name),
             "--filters=4", "--depth=2", "--rounds=2", *args],
            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
            timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        return proc.stdout

    def test_fold_batch_norm_times_both_variants_and_they_agree(self):
        out = self.run_script("fold_batch_norm.py", "--image_size=16", "--batch=2",
                              "--whole=20,24")
        gaps = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines()
                if "max relative difference" in line]
        self.assertLen(gaps, 2, out)
        self.assertLess(max(gaps), 1e-5)

    def test_filter_grad_matmul_checks_its_gradient_and_times_both(self):
        out = self.run_script("filter_grad_matmul.py", "--image_size=16",
                              "--batch_size=2", "--min_channels=4", "--steps=1")
        first = out.splitlines()[0]
        self.assertIn("filter_grad vs Conv2DBackpropFilter", first)
        self.assertLess(float(first.rsplit(" ", 1)[1]), 1e-5)
        self.assertRegex(out, r"matmul/native: \d")
        per_layer = self.run_script("filter_grad_matmul.py", "--image_size=16",
                                    "--batch_size=2", "--steps=1", "--per_layer")
        self.assertEqual(per_layer.count("GFLOP/s"), 2 * 3, per_layer)  # 2 kinds x levels


if __name__ == "__main__":
    tf.test.main()
