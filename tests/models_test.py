"""The five architectures: shapes, dtypes, counts, gradients, BN, dropout, XLA, embedding."""

import os
import tempfile

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from r2u import config
from r2u.nn import layers
from r2u.training import losses
from r2u.nn import models
from r2u.training import optim

ARCHS = config.ARCHS
RECURRENT_ARCHS = ("runet", "r2unet", "attr2unet")
TINY = dict(in_channels=2, num_classes=3, filters=4, depth=2, t=2, dropout=0.0)

# Trainable parameters at the report's defaults (filters 16, depth 4, t=2, 2 classes),
# for 1 input channel (retina) and 3 (ISIC). Changing these breaks users' checkpoints.
DEFAULT_PARAMS = {
    "unet": (2160146, 2160434),
    "resunet": (2247938, 2248258),
    "runet": (2445938, 2445970),
    "r2unet": (2445938, 2445970),
    "attr2unet": (2468306, 2468338),
}


def tiny(arch, **kw):
    return models.build(arch, **{**TINY, **kw})


def batch(seed=0, size=16, channels=2, n=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, size, size, channels)).astype(np.float32)


def batch_norms(model):
    return [m for m in model.submodules if isinstance(m, layers.BatchNorm)]


def unbias_moving_variances(model, x):
    """Turn the unbiased batch variance n/(n-1) * var, which the fused kernel leaves in
    every moving_var, back into var, exactly: n = the pixels a batch norm saw, B*H*W at
    its level (enc_i, up_i, gate_i, dec_i at level i; bottleneck at level depth)."""
    for v in model.variables:
        if "moving_var" in v.name:
            part = v.name.split("/")[1]
            level = model.cfg.depth if part == "bottleneck" else int(part.split("_")[-1])
            n = x.shape[0] * (x.shape[1] // 2**level) * (x.shape[2] // 2**level)
            v.assign(v * ((n - 1) / n))


# (arch, recurrent_bn, recurrence): recurrence only matters for the recurrent archs.
BN_CASES = ([(a, bn, "shared") for a in ARCHS for bn in config.RECURRENT_BN]
            + [(a, bn, "paper") for a in RECURRENT_ARCHS for bn in config.RECURRENT_BN])


class ModelsTest(tf.test.TestCase, parameterized.TestCase):

    @parameterized.product(arch=ARCHS, dtype=config.DTYPES)
    def test_shape_and_dtype(self, arch, dtype):
        model = tiny(arch, compute_dtype=dtype)
        y = model(batch(), training=True)
        self.assertEqual(y.shape, (2, 16, 16, 3))
        self.assertEqual(y.dtype, tf.float32)
        self.assertTrue(np.isfinite(y.numpy()).all())
        self.assertTrue(all(v.dtype == tf.float32 for v in model.variables))

    def test_the_default_is_the_recipe_and_old_configs_keep_their_statistics(self):
        # per-step statistics are what every preset and result uses; a config written
        # before the field existed trained with shared ones and must rebuild as such.
        self.assertEqual(models.build("r2unet").cfg.recurrent_bn, "per_step")
        self.assertEqual(config.ModelConfig().recurrent_bn, "per_step")
        self.assertEqual(config.model_config({"arch": "unet"}).recurrent_bn, "shared")
        self.assertEqual(config.model_config({"recurrent_bn": "per_step"}).recurrent_bn,
                         "per_step")
        unit = models.build("r2unet", filters=4, depth=1).enc_0
        names = {v.name for v in unit.variables}
        self.assertIn("r2unet/enc_0/unit_0/f/bn/moving_mean_2:0", names)

    @parameterized.parameters(*ARCHS)
    def test_exact_parameter_count_at_defaults(self, arch):
        counts = tuple(models.parameter_count(models.build(arch, in_channels=c))
                       for c in (1, 3))
        self.assertEqual(counts, DEFAULT_PARAMS[arch])

    def test_unet_parameter_count_by_hand(self):
        # depth 1, filters 2, 1 -> 2 classes. conv-BN: k*k*in*out + 2*out (no conv bias).
        enc = (9 * 1 * 2 + 4) + (9 * 2 * 2 + 4)          # 1->2, 2->2
        bottleneck = (9 * 2 * 4 + 8) + (9 * 4 * 4 + 8)   # 2->4, 4->4
        up = 9 * 4 * 2 + 4                                # transposed 4->2 + BN
        dec = (9 * 4 * 2 + 4) + (9 * 2 * 2 + 4)          # concat 4->2, 2->2
        head = 2 * 2 + 2
        model = models.build("unet", in_channels=1, filters=2, depth=1)
        self.assertEqual(models.parameter_count(model), enc + bottleneck + up + dec + head)

    def test_golden_variable_names(self):
        names = {v.name for v in tiny("attr2unet", depth=1).trainable_variables}
        for name in ("attr2unet/enc_0/project/w:0", "attr2unet/enc_0/unit_0/f/conv/w:0",
                     "attr2unet/enc_0/unit_1/f/bn/scale:0", "attr2unet/bottleneck/project/b:0",
                     "attr2unet/up_0/conv/w:0", "attr2unet/up_0/bn/offset:0",
                     "attr2unet/gate_0/psi/conv/w:0", "attr2unet/dec_0/unit_0/f/conv/w:0",
                     "attr2unet/head/w:0", "attr2unet/head/b:0"):
            self.assertIn(name, names)

    @parameterized.parameters("shared", "paper")
    def test_golden_per_step_statistics_names(self, recurrence):
        model = tiny("r2unet", depth=1, recurrence=recurrence, recurrent_bn="per_step")
        names = {v.name for v in model.variables}
        f = "f/" if recurrence == "shared" else ""
        for name in (f"r2unet/enc_0/unit_0/{f}bn/moving_mean_0:0",
                     f"r2unet/enc_0/unit_0/{f}bn/moving_var_0:0",
                     f"r2unet/enc_0/unit_1/{f}bn/moving_mean_1:0",
                     f"r2unet/bottleneck/unit_0/{f}bn/moving_var_1:0",
                     f"r2unet/dec_0/unit_1/{f}bn/moving_mean_2:0",
                     f"r2unet/dec_0/unit_1/{f}bn/moving_var_2:0",
                     "r2unet/up_0/bn/moving_mean:0", "r2unet/up_0/bn/moving_var:0",
                     f"r2unet/enc_0/unit_0/{f}bn/scale:0"):
            self.assertIn(name, names)
        self.assertNotIn(f"r2unet/enc_0/unit_0/{f}bn/moving_mean:0", names)
        self.assertFalse([n for n in names if "_3:0" in n])  # t=2: steps 0, 1, 2
        shared = tiny("r2unet", depth=1, recurrence=recurrence, recurrent_bn="shared")
        self.assertEqual({v.name for v in model.trainable_variables},
                         {v.name for v in shared.trainable_variables})
        # 6 recurrent batch norms (3 blocks x 2 units), each with 2 extra sets.
        self.assertEqual(len(model.variables), len(shared.variables) + 6 * 2 * 2)

    @parameterized.parameters(*RECURRENT_ARCHS)
    def test_per_step_statistics_add_no_parameters(self, arch):
        counts = tuple(models.parameter_count(
            models.build(arch, in_channels=c, recurrent_bn="per_step")) for c in (1, 3))
        self.assertEqual(counts, DEFAULT_PARAMS[arch])

    @parameterized.parameters(*BN_CASES)
    def test_inference_with_batch_statistics_equals_training(self, arch, recurrent_bn,
                                                            recurrence):
        # Momentum 0: one training call sets every moving statistic to that batch's, so
        # inference on the same batch must reproduce the training output, provided each
        # recurrent step has its own statistics.
        model = tiny(arch, recurrent_bn=recurrent_bn, recurrence=recurrence)
        for bn in batch_norms(model):
            bn.momentum = 0.0
        x = batch()
        trained = model(x, training=True)
        unbias_moving_variances(model, x)
        inferred = model(x, training=False)
        error = float(tf.reduce_max(tf.abs(inferred - trained)))
        scale = float(tf.reduce_max(tf.abs(trained)))
        if arch in RECURRENT_ARCHS and recurrent_bn == "shared":
            # The one set holds the last step's statistics and misnormalises the others.
            self.assertGreater(error, 0.1 * scale)
        else:
            self.assertLess(error, 1e-4 * scale)

    @parameterized.product(arch=("runet", "r2unet"), recurrence=config.RECURRENCES)
    def test_per_step_statistics_differ_between_steps(self, arch, recurrence):
        model = tiny(arch, recurrent_bn="per_step", recurrence=recurrence)
        stepped = [bn for bn in batch_norms(model) if bn.steps > 1]
        for bn in stepped:  # moving statistics = the training batch's, per step
            bn.momentum = 0.0
        self.assertLen(stepped, 5 * 2)  # 2 units in each of 5 blocks (depth 2)
        before = [v.numpy().copy() for v in model.variables if "moving" in v.name]
        x = batch()
        model(x, training=False)
        after = [v.numpy() for v in model.variables if "moving" in v.name]
        self.assertTrue(all((a == b).all() for a, b in zip(before, after)))
        model(x, training=True)
        for bn in stepped:
            stats = [[v.numpy() for v in bn.moving_stats(k)] for k in range(bn.steps)]
            for j in range(bn.steps):
                for k in range(j):
                    # Relative change of the mean or of the variance between two steps
                    # (steps 1 and 2 come closest, ~3% at worst here; float noise ~1e-7).
                    change = max(np.abs(a - b).max() / np.abs([a, b]).max()
                                 for a, b in zip(stats[j], stats[k]))
                    self.assertGreater(change, 0.01, (bn.name, j, k))

    @parameterized.parameters(*ARCHS)
    def test_every_variable_gets_a_finite_gradient(self, arch):
        model = tiny(arch)
        labels = np.random.default_rng(1).integers(0, 3, size=(2, 16, 16))
        with tf.GradientTape() as tape:
            loss = losses.weighted_cross_entropy(model(batch(), training=True), labels)
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
            self.assertIsNotNone(g, v.name)
            self.assertTrue(np.isfinite(g.numpy()).all(), v.name)
            self.assertGreater(np.abs(g.numpy()).sum(), 0.0, v.name)

    def test_batch_norm_statistics_change_only_when_training(self):
        model = tiny("r2unet")
        stats = lambda: [v.numpy().copy() for v in model.variables if "moving" in v.name]
        before = stats()
        model(batch(), training=False)
        self.assertTrue(all((a == b).all() for a, b in zip(before, stats())))
        model(batch(), training=True)
        self.assertTrue(all((a != b).any() for a, b in zip(before, stats())))

    def test_dropout_is_off_at_inference_and_on_in_training(self):
        model = tiny("unet", dropout=0.5)
        x = batch()
        self.assertAllEqual(model(x, training=False), model(x, training=False))
        a, b = model(x, training=True), model(x, training=True)
        self.assertNotAllClose(a, b)

    @parameterized.parameters(*ARCHS)
    def test_overfits_one_fixed_batch(self, arch):
        model = tiny(arch, in_channels=1, num_classes=2)
        x = batch(channels=1, n=2)
        labels = (x[..., 0] > 0.3).astype(np.int32)  # a learnable pixel rule
        opt = optim.Adam(model.trainable_variables, learning_rate=1e-2)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = losses.weighted_cross_entropy(model(x, training=True), labels)
            opt.apply(tape.gradient(loss, model.trainable_variables),
                      model.trainable_variables)
            return loss
        first = float(step())
        for _ in range(40):
            last = float(step())
        self.assertLess(last, 0.25 * first)

    @parameterized.parameters("unet", "r2unet")
    def test_xla_forward_equals_eager(self, arch):
        model = tiny(arch, depth=1)
        x = batch(size=8)
        eager = model(x, training=False)
        xla = tf.function(lambda x: model(x, training=False), jit_compile=True)(x)
        # float32 in two kernel libraries' summation orders: errors ~1e-6 of the logits'
        # range (an untrained tiny model's logits reach ~100).
        self.assertAllClose(eager, xla, atol=1e-5 * float(tf.reduce_max(tf.abs(eager))))

    def test_embeds_in_a_user_graph_with_gradients_and_checkpoint(self):
        model = tiny("r2unet", num_classes=2)
        scale = tf.Variable(2.0)

        @tf.function
        def user_fn(x):
            with tf.GradientTape() as tape:
                probs = tf.nn.softmax(model(tf.image.flip_left_right(x) * scale,
                                            training=False))
                objective = tf.reduce_mean(probs[..., 1]) + tf.reduce_sum(scale**2)
            return objective, tape.gradient(objective, [scale, *model.trainable_variables])
        objective, grads = user_fn(batch())
        self.assertTrue(np.isfinite(objective.numpy()))
        self.assertTrue(all(g is not None for g in grads))
        ckpt = tf.train.Checkpoint(model=model, user=scale)
        path = ckpt.write(os.path.join(tempfile.mkdtemp(), "ckpt"))
        restored = tiny("r2unet", num_classes=2, seed=7)
        tf.train.Checkpoint(model=restored, user=tf.Variable(0.0)).read(path).assert_consumed()
        self.assertAllClose(model(batch(), training=False),
                            restored(batch(), training=False))

    def test_checkpoint_restores_before_any_call(self):
        model = tiny("attr2unet")
        model(batch(), training=True)  # moves BN statistics
        path = tf.train.Checkpoint(model=model).write(os.path.join(tempfile.mkdtemp(), "c"))
        fresh = tiny("attr2unet", seed=3)
        tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
        for a, b in zip(model.variables, fresh.variables):
            self.assertAllEqual(a, b)

    @parameterized.parameters(
        dict(depth=0), dict(filters=-4), dict(t=-1), dict(dropout=1.0),
        dict(arch="vnet"), dict(compute_dtype="int8"), dict(in_channels=0),
        dict(recurrent_bn="per_layer"))
    def test_bad_config_raises(self, **bad):
        arch = bad.pop("arch", "r2unet")
        with self.assertRaisesRegex(ValueError, list(bad)[0] if bad else "arch"):
            models.build(arch, **{**TINY, **bad})

    def test_odd_input_size_raises(self):
        with self.assertRaisesRegex(ValueError, "multiple of 2\\*\\*depth = 4"):
            tiny("unet")(batch(size=18), training=False)
        with self.assertRaisesRegex(ValueError, "input channels"):
            tiny("unet")(batch(channels=3), training=False)


if __name__ == "__main__":
    tf.test.main()
