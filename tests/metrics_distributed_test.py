"""StreamingMetrics under tf.distribute.MirroredStrategy on 2 logical CPU devices.

Splitting the CPU into logical devices must happen before TensorFlow initialises its
devices, and it changes the device list for the whole process. So the checks run in a
fresh child process: the test collected in a normal pytest session only launches
`pytest` on this file with `_CHILD_ENV` set; in the child, this module configures the
devices at import time and defines the real test class. This works alone, after other
tests in the same session, and never leaks 2 CPU devices into other tests.
"""

import os
import re

import numpy as np
import tensorflow as tf

from tests import child

_CHILD_ENV = "R2U_METRICS_DISTRIBUTED_CHILD"
_IN_CHILD = os.environ.get(_CHILD_ENV) == "1"
_REPLICAS = 2

if _IN_CHILD:
    # Must run before anything touches the TF runtime; a RuntimeError here means it
    # did not, and fails the child loudly instead of skipping.
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * _REPLICAS)

from r2u.evaluation import metrics  # pylint: disable=g-import-not-at-top


def _data(seed, images=8):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=[images, 8, 8]).astype(np.float32)
    y = (rng.uniform(size=[images, 8, 8]) < 0.3).astype(np.float32)
    w = (rng.uniform(size=[images, 8, 8]) < 0.8).astype(np.float32)
    return p, y, w


if _IN_CHILD:

    class MirroredMetricsTest(tf.test.TestCase):
        """Runs only in the child process with 2 logical CPUs."""

        def setUp(self):
            super().setUp()
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            self.assertLen(devices, _REPLICAS)
            self.strategy = tf.distribute.MirroredStrategy(devices)
            with self.strategy.scope():
                self.m = metrics.StreamingMetrics(bins=64)
            self.p, self.y, self.w = _data(seed=0)

        def _run(self, update_fn):
            """Feeds global batches of 4 (2 per replica) through `update_fn`."""
            dataset = tf.data.Dataset.from_tensor_slices((self.p, self.y, self.w))
            dist = self.strategy.experimental_distribute_dataset(dataset.batch(4))

            @tf.function
            def step(batch):
                self.strategy.run(update_fn, args=batch)

            for batch in dist:
                step(batch)

        def _assert_pooled_over_everything(self):
            expected = metrics.scores(metrics.confusion(self.p, self.y, self.w))
            expected["auc"] = metrics.auc(self.p, self.y, self.w, bins=64)
            result = self.m.result()
            for name in metrics.METRIC_NAMES:
                self.assertAllClose(result[name], expected[name], atol=1e-6, msg=name)

        def test_replicas_accumulate_separately_and_sum_on_read(self):
            self.assertEqual(self.strategy.num_replicas_in_sync, _REPLICAS)
            self._run(self.m.update)
            local = self.strategy.experimental_local_results(self.m.confusion)
            self.assertLen(local, _REPLICAS)
            total = metrics.confusion(self.p, self.y, self.w)
            total = np.array([total[k] for k in metrics.COUNT_NAMES])
            for copy in local:  # each replica saw only part of the data
                self.assertGreater(np.sum(copy), 0)
                self.assertLess(np.sum(copy), np.sum(total))
            self.assertAllEqual(np.sum(local, axis=0), total)
            pooled = self.m.counts()
            self.assertAllEqual([pooled[k] for k in metrics.COUNT_NAMES], total)
            self._assert_pooled_over_everything()

        def test_xla_replica_function(self):
            # One jit function shared by both replicas fails in TF 2.21 (for any
            # captured distributed variable, MirroredVariable too): its single
            # trace captures one replica's copy. So each replica builds its own.
            def update(*batch):
                return tf.function(self.m.update, jit_compile=True)(*batch)

            self._run(update)
            self._assert_pooled_over_everything()

        def test_reset_zeroes_every_replica(self):
            self._run(self.m.update)
            self.m.reset()
            for var in (self.m.confusion, self.m.histogram):
                for copy in self.strategy.experimental_local_results(var):
                    self.assertAllEqual(copy, np.zeros(var.shape))
            self._run(self.m.update)
            self._assert_pooled_over_everything()

else:

    class MetricsDistributedTest(tf.test.TestCase):

        def test_mirrored_strategy_in_fresh_process(self):
            child.run_file_in_child(self, __file__, _CHILD_ENV, "3 passed")


if __name__ == "__main__":
    tf.test.main()
