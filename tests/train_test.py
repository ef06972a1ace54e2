"""The training loop end to end on tiny synthetic data: checkpoints, resume, summaries."""

import dataclasses
import json
import os
import re
import tempfile
import time
from unittest import mock

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from tensorboard.backend.event_processing import event_accumulator

from r2u import config
from r2u.training import losses
from r2u.training import run_record
from r2u.training import inputs
from r2u.training import loop
from r2u.training import step as step_lib
from r2u.inference import network
from r2u.data import manifest
from r2u.data import prepare
from r2u.data import prepared
from r2u.data import preprocess
from r2u.data import tfrecord

_DATA = {}


def tiny_data():
    """A small prepared synthetic dataset shared by the tests of this module."""
    if "dir" not in _DATA:
        _DATA["dir"] = tempfile.mkdtemp()
        prepare.prepare("synthetic", None, _DATA["dir"], image_size=32, limit=16)
    return _DATA["dir"]


def tiny_experiment(**train_kw):
    exp = config.synthetic()
    return dataclasses.replace(
        exp,
        model=dataclasses.replace(exp.model, filters=4, depth=2, dropout=0.1),
        data=dataclasses.replace(exp.data, cache=True),
        train=dataclasses.replace(exp.train, **{
            **dict(batch_size=4, steps_per_epoch=2, epochs=2, log_every=1, xla="off"),
            **train_kw}))


def fixed_batch(n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    mask = (image[..., 0] > 0.5).astype(np.int32)
    return {"image": tf.constant(image), "mask": tf.constant(mask),
            "fov": tf.ones([n, size, size])}


class TrainStepTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.product(arch=config.ARCHS, dtype=config.DTYPES)
    def test_steps_reduce_the_loss_on_a_fixed_batch(self, arch, dtype):
        exp = tiny_experiment()
        exp = dataclasses.replace(exp, model=dataclasses.replace(
            exp.model, arch=arch, compute_dtype=dtype, dropout=0.0))
        state = loop.make_state(exp)
        step = loop.make_train_step(state, losses.loss_fn("wce"), 1.0, jit_compile=False)
        batch = fixed_batch()
        first = float(step(batch)["loss"])
        for _ in range(8):
            last = float(step(batch)["loss"])
        self.assertLess(last, first)
        self.assertEqual(step.experimental_get_tracing_count(), 1)

    # The loss curve of low precision training against float32 on one fixed batch, same
    # initial weights: largest relative gap over 20 steps (the loss falls by ~25%). Seen
    # here (seeds 0-2): bfloat16 (8-bit mantissa) <= 0.24%, float16 (11-bit) <= 0.04%.
    @parameterized.parameters(("bfloat16", 0.01), ("float16", 0.002))
    def test_low_precision_loss_curve_follows_float32(self, dtype, tolerance):
        curves = {}
        for compute_dtype in ("float32", dtype):
            exp = tiny_experiment()
            exp = dataclasses.replace(exp, model=dataclasses.replace(
                exp.model, arch="r2unet", compute_dtype=compute_dtype, dropout=0.0))
            state = loop.make_state(exp)
            step = loop.make_train_step(state, losses.loss_fn("wce"), 1.0,
                                         jit_compile=False)
            batch = fixed_batch(size=16)
            curves[compute_dtype] = np.array([float(step(batch)["loss"])
                                              for _ in range(20)])
        reference = curves["float32"]
        self.assertLess(reference[-1], 0.85 * reference[0])  # the curve does go down
        gap = np.abs(curves[dtype] - reference) / reference
        self.assertLess(gap.max(), tolerance, (curves, gap))

    def test_several_steps_per_call_equal_single_steps(self):
        exp = dataclasses.replace(tiny_experiment(), model=dataclasses.replace(
            tiny_experiment().model, arch="r2unet", dropout=0.0))
        batches = [fixed_batch(size=16, seed=s) for s in range(3)]
        single = loop.make_state(exp)
        step = loop.make_train_step(single, losses.loss_fn("wce"), 1.0, jit_compile=False)
        losses_single = [float(step(b)["loss"]) for b in batches]
        fused = loop.make_state(exp)
        fused_loop = loop.make_train_loop(
            loop.make_train_step(fused, losses.loss_fn("wce"), 1.0, jit_compile=False), 3)
        dataset = tf.data.Dataset.from_tensor_slices(
            {k: tf.stack([b[k] for b in batches]) for k in batches[0]})
        out = fused_loop(iter(dataset))
        self.assertAllClose(float(out["loss"]), np.mean(losses_single), rtol=1e-5)
        self.assertTrue(bool(out["finite"]))
        self.assertEqual(int(fused.step), 3)
        for a, b in zip(single.model.trainable_variables, fused.model.trainable_variables):
            self.assertAllClose(a, b, atol=1e-5)

    def test_float16_skips_non_finite_steps_and_lowers_the_scale(self):
        exp = tiny_experiment()
        exp = dataclasses.replace(exp, model=dataclasses.replace(exp.model,
                                                                 compute_dtype="float16"))
        state = loop.make_state(exp)
        step = loop.make_train_step(state, losses.loss_fn("wce"), 1.0, jit_compile=False)
        batch = fixed_batch()
        batch["image"] = tf.tensor_scatter_nd_update(batch["image"], [[0, 0, 0, 0]],
                                                     [np.inf])
        before = [v.numpy() for v in state.model.trainable_variables]
        scale = float(state.loss_scale.scale)
        out = step(batch)
        self.assertFalse(bool(out["finite"]))
        self.assertEqual(float(state.loss_scale.scale), scale / 2)
        self.assertEqual(int(state.bad_steps), 1)
        for a, b in zip(before, state.model.trainable_variables):
            self.assertAllEqual(a, b)

    @parameterized.parameters("float32", "bfloat16")
    def test_loop_stops_at_the_first_non_finite_step(self, dtype):
        exp = tiny_experiment()
        exp = dataclasses.replace(exp, model=dataclasses.replace(
            exp.model, arch="resunet", depth=1, compute_dtype=dtype, dropout=0.0))
        batches = [fixed_batch(size=16, seed=s) for s in range(4)]
        batches[1]["image"] = batches[1]["image"] * np.nan  # step 2 of 4
        reference = loop.make_state(exp)  # the same initial weights, step 1 only
        loop.make_train_step(reference, losses.loss_fn("wce"), 1.0, False)(batches[0])
        state = loop.make_state(exp)
        stopping = loop.make_train_loop(
            loop.make_train_step(state, losses.loss_fn("wce"), 1.0, jit_compile=False), 4,
            stop_at_non_finite=True)
        out = stopping(iter(tf.data.Dataset.from_tensor_slices(
            {k: tf.stack([b[k] for b in batches]) for k in batches[0]})))
        self.assertFalse(bool(out["finite"]))
        self.assertEqual(int(out["steps"]), 2)
        self.assertEqual(int(state.step), 2)  # steps 3 and 4 never ran
        self.assertEqual(int(state.bad_steps), 1)
        for a, b in zip(_weights(reference), _weights(state), strict=True):
            self.assertAllEqual(a, b, msg=a.name)  # as after step 1, statistics too
            self.assertTrue(np.all(np.isfinite(b.numpy())), b.name)

    def test_float16_non_finite_step_leaves_batch_norm_statistics_and_metrics(self):
        exp = tiny_experiment()
        exp = dataclasses.replace(exp, model=dataclasses.replace(
            exp.model, arch="resunet", depth=1, compute_dtype="float16"))
        state = loop.make_state(exp)
        step = loop.make_train_step(state, losses.loss_fn("wce"), 1.0, jit_compile=False)
        step(fixed_batch(seed=1))  # statistics and metrics away from their initial values
        stats = step_lib.moving_statistics(state.model)
        self.assertNotEmpty(stats)
        self.assertLen(stats, len([v for v in state.model.variables if "moving_" in v.name]))
        kept = stats + list(state.train_metrics.variables)
        before = [v.numpy() for v in kept]
        batch = fixed_batch()
        batch["image"] = tf.tensor_scatter_nd_update(batch["image"], [[0, 0, 0, 0]],
                                                     [np.nan])
        self.assertFalse(bool(step(batch)["finite"]))
        self.assertEqual(int(state.bad_steps), 1)
        for value, var in zip(before, kept):
            self.assertAllEqual(value, var, msg=var.name)
            self.assertTrue(np.all(np.isfinite(var.numpy())), var.name)

    def test_xla_step_matches_default_step(self):
        exp = tiny_experiment()
        exp = dataclasses.replace(exp, model=dataclasses.replace(
            exp.model, arch="unet", depth=1, dropout=0.0))
        outs = []
        for jit in (False, True):
            state = loop.make_state(exp)
            step = loop.make_train_step(state, losses.loss_fn("wce"), 1.0, jit)
            step(fixed_batch(size=8))
            outs.append([v.numpy() for v in state.model.trainable_variables])
        for a, b in zip(*outs):
            self.assertAllClose(a, b, atol=1e-5)


class TrainLoopTest(tf.test.TestCase):

    def test_the_manifest_is_read_once_per_run(self):
        data_dir, reads, real = tiny_data(), [], manifest.load

        def counting(path):
            reads.append(path)
            return real(path)

        with mock.patch.object(manifest, "load", counting):
            # Two epochs: two validations, the training stream, weights and counts.
            loop.train(tiny_experiment(), tempfile.mkdtemp(), data_dir)
            self.assertEqual(reads, [data_dir])
            loop.train(tiny_experiment(), tempfile.mkdtemp(), prepared.load(data_dir))
        self.assertEqual(reads, [data_dir] * 2)  # the second run: only the load above

    def test_end_to_end_writes_checkpoints_summaries_config_and_export(self):
        model_dir = tempfile.mkdtemp()
        summary = loop.train(tiny_experiment(), model_dir, tiny_data())
        self.assertEqual(summary["steps"], 4)
        self.assertLen(summary["history"], 2)
        # Selection: the headline metric at its own best threshold, not Dice at 0.5.
        best = max(summary["history"], key=lambda h: h["operating_point"]["best"])
        self.assertEqual(summary["best_step"], best["step"])
        self.assertEqual(summary["threshold"], best["operating_point"]["threshold"])
        for name in ("config.json", "summary.json", "best.json", "export/saved_model.pb"):
            self.assertTrue(os.path.exists(os.path.join(model_dir, name)), name)
        with open(os.path.join(model_dir, "config.json")) as f:
            written = config.Experiment.from_dict(json.load(f))
        self.assertEqual(written, dataclasses.replace(
            tiny_experiment(), inference=config.InferenceConfig(summary["threshold"])))
        with open(os.path.join(model_dir, "export", "r2u_model.json")) as f:
            self.assertEqual(json.load(f)["threshold"], summary["threshold"])
        tags = {}
        for phase in ("train", "validation"):
            acc = event_accumulator.EventAccumulator(
                os.path.join(model_dir, "tb", phase),
                size_guidance={event_accumulator.TENSORS: 0})
            acc.Reload()
            tags[phase] = set(acc.Tags()["tensors"])
        self.assertContainsSubset({"loss", "grad_norm", "learning_rate", "images_per_second",
                                   "dice"}, tags["train"])
        self.assertContainsSubset({"dice", "jaccard", "auc", "sensitivity", "input",
                                   "ground_truth", "prediction_overlay"}, tags["validation"])
        with self.assertRaisesRegex(FileExistsError, "--resume"):
            loop.train(tiny_experiment(), model_dir, tiny_data())

    def test_resume_reaches_the_same_parameters_as_an_uninterrupted_run(self):
        straight, split = tempfile.mkdtemp(), tempfile.mkdtemp()
        exp = tiny_experiment()
        loop.train(exp, straight, tiny_data())
        half = dataclasses.replace(exp, train=dataclasses.replace(exp.train, steps=3))
        loop.train(half, split, tiny_data())
        with open(os.path.join(split, "config.json")) as f:
            written = f.read()
        with self.assertRaisesRegex(ValueError, r"config.json in train.steps 3 -> None;"):
            loop.train(exp, split, tiny_data(), resume=True)
        with open(os.path.join(split, "config.json")) as f:
            self.assertEqual(f.read(), written)  # refused before writing anything
        loop.train(exp, split, tiny_data(), resume=True, resume_overrides=True)
        a, b = (tf.saved_model.load(os.path.join(d, "export")) for d in (straight, split))
        image = fixed_batch(n=1)["image"]
        self.assertAllClose(a.serve(image), b.serve(image), atol=1e-6)
        ckpts = [tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(d, "ckpt")))
                 for d in (straight, split)]
        names = [n for n in ckpts[0].get_variable_to_shape_map() if "model/" in n]
        self.assertNotEmpty(names)
        for name in names:  # CPU, fixed seed: identical up to float summation order
            self.assertAllClose(ckpts[0].get_tensor(name), ckpts[1].get_tensor(name),
                                atol=1e-6, msg=name)

    def test_resume_refuses_another_config_naming_the_fields(self):
        model_dir = tempfile.mkdtemp()
        exp = tiny_experiment(epochs=1)
        tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)),
                                   os.path.join(model_dir, "ckpt"), 1).save()
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            # As training leaves it: with the threshold it chose, which is no change.
            f.write(dataclasses.replace(exp, inference=config.InferenceConfig(0.3)).to_json())
        run_record.check_resume(exp, model_dir, resume=True, resume_overrides=False)
        longer = dataclasses.replace(exp, train=dataclasses.replace(
            exp.train, epochs=2, learning_rate=0.01))
        with self.assertRaisesRegex(
                ValueError, r"^[^\n]*config.json in train.epochs 1 -> 2, "
                r"train.learning_rate 0.001 -> 0.01;[^\n]*resume_overrides=True[^\n]*$"):
            run_record.check_resume(longer, model_dir, resume=True, resume_overrides=False)
        run_record.check_resume(longer, model_dir, resume=True, resume_overrides=True)
        with self.assertRaisesRegex(FileExistsError, "--resume"):
            run_record.check_resume(exp, model_dir, resume=False, resume_overrides=True)

    def test_resume_accepts_the_config_json_layout_before_the_preprocessing_spec(self):
        model_dir = tempfile.mkdtemp()
        exp = dataclasses.replace(tiny_experiment(epochs=1), preprocessing=dataclasses.replace(
            tiny_experiment().preprocessing, contrast=True))
        tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)),
                                   os.path.join(model_dir, "ckpt"), 1).save()
        old = json.loads(exp.to_json())  # as the code before the spec wrote it
        del old["preprocessing"]
        old["data"]["contrast"] = True
        with open(os.path.join(model_dir, "config.json"), "w") as f:
            json.dump(old, f)
        run_record.check_resume(exp, model_dir, resume=True, resume_overrides=False)
        plain = dataclasses.replace(exp, preprocessing=dataclasses.replace(
            exp.preprocessing, contrast=False))
        with self.assertRaisesRegex(ValueError, "preprocessing.contrast True -> False"):
            run_record.check_resume(plain, model_dir, resume=True, resume_overrides=False)

    def test_non_finite_step_stops_training_at_that_step(self):
        # Log points every 4 steps: the check must not wait for them.
        exp = tiny_experiment(log_every=4)
        exp = dataclasses.replace(exp, model=dataclasses.replace(exp.model, arch="unet"))
        model_dir, states = tempfile.mkdtemp(), []
        real_dataset, real_state = inputs.training_dataset, loop.make_state

        def poisoned(*args):  # the images of the 3rd batch (step 3) are NaN
            return real_dataset(*args).enumerate().map(lambda i, b: {
                **b, "image": tf.where(i == 2, np.nan, b["image"])})

        def keep(*args):
            states.append(real_state(*args))
            return states[-1]

        good = os.path.join(model_dir, "ckpt", "ckpt-2")
        with mock.patch.object(inputs, "training_dataset", poisoned), \
                mock.patch.object(loop, "make_state", keep):
            with self.assertRaisesRegex(FloatingPointError,
                                        rf"at step 3 of 4: .*last good checkpoint: "
                                        rf"{re.escape(good)}$"):
                loop.train(exp, model_dir, tiny_data())
        self.assertEqual(int(states[0].step), 3)
        self.assertEqual(tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt")), good)
        self.assertFalse(os.path.exists(os.path.join(model_dir, "summary.json")))
        # Nothing changed after step 2: weights, Adam and batch-norm statistics.
        saved = loop.make_state(exp)
        saved.checkpoint().read(good).expect_partial()
        for a, b in zip(_weights(saved), _weights(states[0]), strict=True):
            self.assertAllEqual(a, b, msg=a.name)

    def test_a_run_past_its_deadline_ends_its_schedule_sooner_and_keeps_it(self):
        exp = tiny_experiment(epochs=4)  # 8 steps of 2 per epoch
        model_dir = tempfile.mkdtemp()
        summary = loop.train(exp, model_dir, tiny_data(), deadline=time.time())
        # Epoch 1's validation traces its graphs, epoch 2's is timed; after epoch 3
        # the schedule ends one step on.
        self.assertEqual(summary["steps"], 7)
        state = loop.make_state(exp)
        state.checkpoint().read(tf.train.latest_checkpoint(
            os.path.join(model_dir, "ckpt"))).expect_partial()
        self.assertEqual(int(state.total_steps), 7)
        self.assertEqual(loop.train(exp, model_dir, tiny_data(), resume=True)["steps"], 7)

    def test_bfloat16_skips_a_non_finite_step_and_stops_when_they_are_many(self):
        exp = tiny_experiment(log_every=4)
        exp = dataclasses.replace(exp, model=dataclasses.replace(
            exp.model, arch="unet", compute_dtype="bfloat16"))
        real_dataset = inputs.training_dataset

        def poisoned(steps):  # the images of these 0-based steps are NaN
            def dataset(*args):
                return real_dataset(*args).enumerate().map(lambda i, b: {
                    **b, "image": tf.where(tf.reduce_any(tf.equal(i, steps)), np.nan,
                                           b["image"])})
            return dataset

        with mock.patch.object(inputs, "training_dataset", poisoned([2])):
            summary = loop.train(exp, tempfile.mkdtemp(), tiny_data())
        self.assertEqual(summary["steps"], 4)  # trained on, the bad step skipped
        self.assertEqual(summary["skipped_steps"], 1)
        long = dataclasses.replace(exp, train=dataclasses.replace(exp.train, steps=8,
                                                                   log_every=1))
        with mock.patch.object(inputs, "training_dataset", poisoned([1, 2, 3, 4, 5])):
            with self.assertRaisesRegex(FloatingPointError,
                                        r"at step 5 of 8 after 4 skipped steps"):
                loop.train(long, tempfile.mkdtemp(), tiny_data())

    def test_export_predicts_what_the_best_checkpoint_predicts(self):
        model_dir = tempfile.mkdtemp()
        exp = tiny_experiment()
        loop.train(exp, model_dir, tiny_data())
        state = loop.make_state(exp)
        best = tf.train.latest_checkpoint(os.path.join(model_dir, "best"))
        state.checkpoint().read(best).expect_partial()
        loaded = tf.saved_model.load(os.path.join(model_dir, "export"))
        raw = tf.cast(next(iter(tf.data.TFRecordDataset(
            tfrecord.shard_paths(tiny_data(), "test")).map(tfrecord.parse)))["image"][None],
            tf.float32)
        want = network.probabilities(state.model, preprocess.preprocess(raw, 3))
        self.assertAllClose(loaded.serve(raw)["probabilities"], want, atol=1e-5)


def _weights(state):
    """Everything a step may change but the counters: weights, Adam, BN statistics."""
    return (list(state.model.trainable_variables) + step_lib.moving_statistics(state.model)
            + [state.opt.iterations, *state.opt.m, *state.opt.v])


if __name__ == "__main__":
    tf.test.main()
