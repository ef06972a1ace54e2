"""The training step under MirroredStrategy, and the distribution helpers.

MirroredStrategy runs on 2 logical CPU devices. Splitting the CPU must happen before
TensorFlow initialises its devices and changes the device list for the whole process, so
those checks run in a fresh child process (as in `metrics_distributed_test.py`): the test
collected in a normal session launches `pytest` on this file with `_CHILD_ENV` set, and
only then does this module split the CPU and define the mirrored test class.

What "mirrored == one device" means here. Batch norm is replica-local: each replica
normalises with the statistics of its own half of the batch. The test batch is built so
that this does not change anything: its halves hold the same two images (so each half's
per-channel statistics, in every layer, equal the whole batch's), while the labels and
field-of-view masks differ everywhere (so each replica's loss and gradient differ, and a
replica reading the other's data, a missing sum or a wrong loss weighting shows). Only
the moving variance differs by construction: it uses the unbiased variance, n/(n-1) with
n the pixels of one replica's half (2048 at 32x32) instead of the whole batch (4096),
relative 2.4e-4 at the first level (3.9e-3 at the 8x8 bottleneck) on the batch term.
"""

import dataclasses
import os
import tempfile
import types

import numpy as np
import tensorflow as tf

from tests import child

_CHILD_ENV = "R2U_DISTRIBUTE_CHILD"
_IN_CHILD = os.environ.get(_CHILD_ENV) == "1"
_REPLICAS = 2

if _IN_CHILD:
    # Must run before anything touches the TF runtime; a RuntimeError here fails loudly.
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * _REPLICAS)

# pylint: disable=g-import-not-at-top
from r2u import config  # noqa: E402
from r2u.training import distribute  # noqa: E402
from r2u.inference import network  # noqa: E402
from r2u.training import losses  # noqa: E402
from r2u.evaluation import metrics  # noqa: E402
from r2u.nn import models  # noqa: E402
from r2u.training import inputs
from r2u.training import loop  # noqa: E402
from r2u.data import prepare  # noqa: E402
from r2u.data import prepared  # noqa: E402
from r2u.data import preprocess  # noqa: E402
from r2u.data import tfrecord  # noqa: E402

_DATA = {}


def tiny_data():
    """16 synthetic 32x32 training images in 4 shards, shared by the tests here."""
    if "dir" not in _DATA:
        _DATA["dir"] = tempfile.mkdtemp()
        prepare.prepare("synthetic", None, _DATA["dir"], image_size=32, limit=16,
                        num_shards=4)
    return _DATA["dir"]


def tiny_experiment(depth=2, dropout=0.0):
    """U-Net (the cheapest to trace: the step does not depend on the block), 2 steps."""
    exp = config.synthetic()
    return dataclasses.replace(
        exp,
        model=dataclasses.replace(exp.model, arch="unet", filters=4, depth=depth,
                                  dropout=dropout),
        train=dataclasses.replace(exp.train, batch_size=4, steps_per_epoch=2, epochs=1,
                                  log_every=1, xla="off"))


def global_batch(seed=0):
    """[a, b, a, b]: both halves hold the same images, all labels and FOVs differ."""
    rng = np.random.default_rng(seed)
    pair = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    image = np.concatenate([pair, pair])
    mask = (rng.uniform(size=(4, 32, 32)) < 0.3).astype(np.int32)
    fov = (rng.uniform(size=(4, 32, 32)) < 0.5 + 0.1 * np.arange(4)[:, None, None])
    return {"image": image, "mask": mask, "fov": fov.astype(np.float32)}


def loss_fn():
    return losses.loss_fn("wce", (0.7, 1.8))


if _IN_CHILD:

    class MirroredTrainStepTest(tf.test.TestCase):
        """Runs only in the child process, with 2 logical CPU devices."""

        @classmethod
        def setUpClass(cls):
            super().setUpClass()
            names = [d.name for d in tf.config.list_logical_devices("CPU")]
            assert len(names) == _REPLICAS, names
            # One strategy per process, as in real use: two strategies on the same
            # devices would reuse collective instance keys and mix up their all-reduces.
            cls.strategy = tf.distribute.MirroredStrategy(names)

        def _mirrored(self, exp, batches, jit=False):
            """Steps under the strategy: (state, step function, outputs, replica shapes)."""
            with self.strategy.scope():
                state = loop.make_state(exp)
            step = loop.make_train_step(state, loss_fn(), 1e6, jit, self.strategy)
            outs, shapes = [], []
            for batch in batches:
                inputs = next(iter(self.strategy.experimental_distribute_dataset(
                    tf.data.Dataset.from_tensors(batch))))
                outs.append({k: float(v) for k, v in step(inputs).items()})
                shapes += [x.shape for x in self.strategy.experimental_local_results(
                    inputs["image"])]
            return state, step, outs, shapes

        def _single(self, exp, batches):
            state = loop.make_state(exp)
            step = loop.make_train_step(state, loss_fn(), 1e6, jit_compile=False)
            return state, [{k: float(v) for k, v in step(b).items()} for b in batches]

        def _assert_same_training(self, mirrored, single, atol):
            (m_state, m_outs), (s_state, s_outs) = mirrored, single
            self.assertLen(m_outs, len(s_outs))
            for m, s in zip(m_outs, s_outs):  # the global loss, and the summed gradient
                self.assertAllClose(m["loss"], s["loss"], atol=atol)
                self.assertAllClose(m["grad_norm"], s["grad_norm"], rtol=atol)
                self.assertTrue(m["finite"])
            self.assertEqual(int(m_state.step.numpy()), len(m_outs))
            named = zip(m_state.model.variables, s_state.model.variables)
            for m_var, s_var in named:
                self.assertEqual(m_var.name, s_var.name)
                if "moving_var" in m_var.name:  # n/(n-1) with n of a half: see module doc
                    self.assertAllClose(m_var, s_var, rtol=1e-3, msg=m_var.name)
                    continue
                copies = self.strategy.experimental_local_results(m_var)
                self.assertLen(copies, _REPLICAS)
                for copy in copies:  # every replica holds the same weights
                    self.assertAllClose(copy, s_var, atol=atol, msg=m_var.name)
            m_counts, s_counts = m_state.train_metrics.counts(), \
                s_state.train_metrics.counts()
            for name in metrics.COUNT_NAMES:  # summed over replicas; 1 pixel of slack
                self.assertAllClose(m_counts[name], s_counts[name], atol=1.0, msg=name)

        def test_mirrored_steps_match_one_device_on_the_global_batch(self):
            exp, batches = tiny_experiment(), [global_batch(seed) for seed in range(3)]
            state, step, outs, shapes = self._mirrored(exp, batches)
            self.assertEqual(shapes, [(2, 32, 32, 3)] * 6)  # global 4 / 2 replicas
            # float32 on CPU: the same arithmetic in another summation order.
            self._assert_same_training((state, outs), self._single(exp, batches), 1e-5)

            # A non-finite gradient on one replica skips the update on every replica.
            bad = global_batch()
            bad["image"][3, 0, 0, 0] = np.inf  # only in replica 1's half
            before = [v.numpy() for v in state.model.trainable_variables]
            inputs = next(iter(self.strategy.experimental_distribute_dataset(
                tf.data.Dataset.from_tensors(bad))))
            self.assertFalse(bool(step(inputs)["finite"]))
            self.assertEqual(int(state.bad_steps.numpy()), 1)
            self.assertEqual(int(state.step.numpy()), 4)
            for var, value in zip(state.model.trainable_variables, before):
                for copy in self.strategy.experimental_local_results(var):
                    self.assertAllEqual(copy, value)
            self.assertEqual(step.experimental_get_tracing_count(), 1)

        def test_mirrored_xla_step_matches_one_device(self):
            # With jit each replica compiles its own forward and backward pass.
            exp, batches = tiny_experiment(depth=1), [global_batch(seed=1)] * 2
            state, _, outs, _ = self._mirrored(exp, batches, jit=True)
            # XLA fuses and reorders float32 arithmetic: looser than without it.
            self._assert_same_training((state, outs), self._single(exp, batches), 1e-4)

        def test_train_runs_end_to_end_under_mirrored(self):
            model_dir = tempfile.mkdtemp()
            exp = tiny_experiment(dropout=0.1)  # dropout: a different stream per replica
            summary = loop.train(exp, model_dir, tiny_data(), strategy=self.strategy)
            self.assertEqual(summary["steps"], 2)
            self.assertLen(summary["history"], 1)
            self.assertTrue(os.path.exists(os.path.join(model_dir, "export",
                                                        "saved_model.pb")))
            self.assertEqual(tf.train.latest_checkpoint(os.path.join(model_dir, "ckpt")),
                             os.path.join(model_dir, "ckpt", "ckpt-2"))
            # The export (written from an unreplicated copy) is the best checkpoint.
            plain = models.build(exp.model)
            tf.train.Checkpoint(model=plain).read(tf.train.latest_checkpoint(
                os.path.join(model_dir, "best"))).expect_partial()
            image = global_batch()["image"][:1]
            exported = tf.saved_model.load(os.path.join(model_dir, "export"))
            served = exported.serve(image)["probabilities"]
            self.assertAllClose(served, network.probabilities(
                plain, preprocess.preprocess(image, 3)), atol=1e-5)

else:

    def _fake_worker(index, workers=2):
        """What `r2u.training.distribute` reads of a MultiWorkerMirroredStrategy on
        worker `index`."""
        cluster = tf.train.ClusterSpec(
            {"worker": [f"127.0.0.1:{i}" for i in range(workers)]})
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            cluster, task_type="worker", task_id=index)
        return types.SimpleNamespace(cluster_resolver=resolver)

    class InputShardingTest(tf.test.TestCase):

        def _shards_read(self, ctx):
            """Which shards the training stream of `ctx` actually draws images from."""
            exp = tiny_experiment()
            exp = dataclasses.replace(exp, data=dataclasses.replace(exp.data,
                                                                    augment=False))
            sources = []  # (shard, standardised raw image)
            for shard, path in enumerate(tfrecord.shard_paths(tiny_data(), "train")):
                for record in tf.data.TFRecordDataset(path).map(tfrecord.parse):
                    sources.append((shard, preprocess.preprocess(record["image"], 3)))
            stream = inputs.training_dataset(prepared.load(tiny_data()), exp, ctx, done=0)
            shards, images = set(), set()
            for batch in stream.take(8):
                self.assertEqual(batch["image"].shape[0], 2)  # global 4 / 2 replicas
                for image in batch["image"]:
                    errors = [float(tf.reduce_max(tf.abs(image - raw)))
                              for _, raw in sources]
                    best = int(np.argmin(errors))
                    self.assertLess(errors[best], 1e-4)
                    shards.add(sources[best][0])
                    images.add(best)
            return shards, len(images)

        def test_each_worker_reads_a_disjoint_set_of_shards(self):
            files = tfrecord.shard_paths(tiny_data(), "train")
            self.assertLen(files, 4)
            for worker in range(2):
                ctx = tf.distribute.InputContext(num_input_pipelines=2,
                                                 input_pipeline_id=worker,
                                                 num_replicas_in_sync=2)
                shards, images = self._shards_read(ctx)
                self.assertEqual(shards, {worker, worker + 2})
                self.assertEqual(images, 8)  # the whole of both shards, 16 images drawn
                with self.assertLogs("absl", "INFO") as logs:  # what bin/train logs
                    distribute.log_shards(ctx, files)
                names = ",".join(os.path.basename(files[i]) for i in sorted(shards))
                self.assertIn(f"input pipeline {worker} of 2 reads {names}",
                              logs.output[0])

        def test_fewer_shards_than_workers_is_a_clear_error(self):
            ctx = tf.distribute.InputContext(num_input_pipelines=5, input_pipeline_id=0,
                                             num_replicas_in_sync=5)
            exp = tiny_experiment()
            exp = dataclasses.replace(exp, train=dataclasses.replace(exp.train,
                                                                     batch_size=5))
            with self.assertRaisesRegex(ValueError, "4 shard file.*5 input pipelines.*at "
                                        "least 5 shards"):
                inputs.training_dataset(prepared.load(tiny_data()), exp, ctx, done=0)

        def test_resume_skips_what_each_pipeline_produced(self):
            one_host = tf.distribute.InputContext(1, 0, num_replicas_in_sync=2)
            per_worker = tf.distribute.InputContext(2, 1, num_replicas_in_sync=2)
            self.assertEqual(distribute.batches_to_skip(one_host, 3), 6)
            self.assertEqual(distribute.batches_to_skip(per_worker, 3), 3)

    class WorkersTest(tf.test.TestCase):

        def test_the_first_worker_is_the_chief(self):
            default = tf.distribute.get_strategy()
            self.assertTrue(distribute.is_chief(default))
            self.assertEqual(distribute.num_workers(default), 1)
            self.assertTrue(distribute.is_chief(_fake_worker(0)))
            self.assertFalse(distribute.is_chief(_fake_worker(1)))
            self.assertEqual(distribute.num_workers(_fake_worker(1, workers=3)), 3)

        def test_only_the_chief_writes_to_model_dir(self):
            model_dir = tempfile.mkdtemp()
            with distribute.worker_dir(_fake_worker(0), model_dir) as out:
                self.assertEqual(out, model_dir)
            private = os.path.join(model_dir, ".worker-1")
            os.makedirs(private)
            with open(os.path.join(private, "left-by-a-killed-worker"), "w"):
                pass
            with self.assertRaises(KeyError):
                with distribute.worker_dir(_fake_worker(1), model_dir) as out:
                    self.assertEqual(out, private)
                    self.assertEmpty(os.listdir(out))  # emptied on entry
                    raise KeyError("training failed")
            self.assertEqual(os.listdir(model_dir), [])  # and deleted on any exit

        def test_one_worker_needs_no_collectives(self):
            default = tf.distribute.get_strategy()
            self.assertAllEqual(distribute.from_chief(default, [0.25, 3.0]), [0.25, 3.0])
            distribute.check_same_step(default, 7, "unused")  # nothing to compare

    class MirroredInChildTest(tf.test.TestCase):

        def test_mirrored_strategy_in_fresh_process(self):
            child.run_file_in_child(self, __file__, _CHILD_ENV, "3 passed")


if __name__ == "__main__":
    tf.test.main()
