"""The r2u networks as a Keras 3 layer: `R2UNetLayer("r2unet", in_channels=3, ...)`.

Keras 3 tracks only its own `keras.Variable`s, so a `tf.Module` stored on a plain
`keras.layers.Layer` contributes no weights: `fit` warns that the model "does not have any
trainable weights" and trains nothing. `R2UNetLayer` builds the r2u module in `build()` and
hands each of its `tf.Variable`s to Keras wrapped in a `keras.Variable`. On the TensorFlow
backend a `keras.Variable` built from an existing `tf.Variable` *is* that variable (no copy;
the pattern of `keras.layers.TFSMLayer`), so the module computes with the very variables
Keras' optimizer updates, `save()` writes and `load_model()` restores:

- `trainable_weights`: the module's `trainable_variables`, in the same order;
- `non_trainable_weights`: the batch-norm moving statistics, then the dropout generator's
  state (not a `tf.Module` variable, but part of the module's checkpoint), so a reloaded
  model also continues the same dropout stream.

Keras' `training` flag drives batch norm and dropout: `fit` calls the layer with
`training=True` (batch moments, moving statistics updated, dropout on); `predict`,
`evaluate` and a plain call use `training=False` (moving statistics, no dropout), which is
exactly `layer.module(x, training=False)`. A frozen layer (`trainable=False`) always runs
in inference mode, as Keras' own BatchNormalization does.

Output: float32 logits [B, H, W, num_classes] (no softmax); pick the loss to match, e.g.
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)` with integer masks
[B, H, W]. Inputs are NHWC with H and W multiples of 2**depth, as for the module.
Mixed precision is the r2u `compute_dtype` field, not a Keras dtype policy: the layer's
own Keras dtype defaults to float32 so Keras leaves the inputs alone.

Under a `tf.distribute` strategy the moving statistics stay replica-local, as everywhere in
r2u (averaged when read or saved): `fit` trains as usual, but a `predict` run under the
strategy normalises with each replica's own statistics. For inference with the averaged
statistics, predict with a copy reloaded outside the strategy.

TensorFlow backend only. Importing this module imports Keras; `import r2u` does not.
The class is registered as "r2u>R2UNetLayer", so `keras.models.load_model` finds it once
`r2u.nn.keras_layer` has been imported.
"""

import dataclasses
from typing import Union

import keras
import tensorflow as tf

from r2u import config as config_lib
from r2u.nn import models

# tf.Variable aggregation/synchronization as the names keras.Variable takes: the
# wrappers describe the variables they hold (they do not create them).
_AGGREGATIONS = {
    tf.VariableAggregation.NONE: "none",
    tf.VariableAggregation.SUM: "sum",
    tf.VariableAggregation.MEAN: "mean",
    tf.VariableAggregation.ONLY_FIRST_REPLICA: "only_first_replica",
}
_SYNCHRONIZATIONS = {
    tf.VariableSynchronization.AUTO: "auto",
    tf.VariableSynchronization.NONE: "none",
    tf.VariableSynchronization.ON_WRITE: "on_write",
    tf.VariableSynchronization.ON_READ: "on_read",
}


@keras.saving.register_keras_serializable(package="r2u")
class R2UNetLayer(keras.layers.Layer):
    """An r2u network (any `models.BLOCKS` arch) as a Keras layer; outputs float32 logits.

    Takes the arguments of `models.build`: an arch name or a `ModelConfig`, then config
    fields as keywords; plus Keras' `name`, `trainable` and `dtype`. `get_config()` holds
    every `ModelConfig` field, so the layer round-trips through `.keras` files.
    The r2u module is created at `build()` (the first call) and is `layer.module`.
    """

    def __init__(self, arch: Union[str, config_lib.ModelConfig] = "r2unet", *,
                 name=None, trainable=True, dtype="float32", **config):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError("R2UNetLayer needs the TensorFlow Keras backend, not "
                                      f"{keras.backend.backend()!r}")
        if isinstance(arch, config_lib.ModelConfig):
            cfg = dataclasses.replace(arch, **config)
        else:
            cfg = config_lib.ModelConfig(arch=arch, **config)
        models.validate(cfg)  # bad fields fail here, not at the first call
        super().__init__(name=name, trainable=trainable, dtype=dtype)
        self.cfg = cfg
        self.module = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels != self.cfg.in_channels:
            raise ValueError(f"layer {self.name!r} was configured for in_channels="
                             f"{self.cfg.in_channels} but is called on inputs of shape "
                             f"{tuple(input_shape)}")
        with tf.init_scope():  # eager variables even when first called inside a tf.function
            self.module = models.build(self.cfg)
            generator = self.module.generator.state
            # Keras tracks keras.Variables assigned to attributes (here: a list of them).
            self.module_variables = (
                [_wrap(v, self.module) for v in self.module.trainable_variables]
                + [_wrap(v, self.module) for v in self.module.variables if not v.trainable]
                + [_wrap(generator, self.module, name="generator.state", trainable=False)])
        if not self.trainable:
            # As Layer.add_weight does for a frozen layer; the tracker has already filed
            # the weights as trainable, so `layer.trainable = True` unfreezes them.
            for variable in self.module_variables:
                variable.trainable = False

    def call(self, inputs, training=False):
        # Keras passes a Python bool (None outside fit/evaluate/predict). A frozen layer
        # runs in inference mode, like keras.layers.BatchNormalization: no moving-statistic
        # updates, no dropout.
        return self.module(inputs, training=bool(training) and self.trainable)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.cfg.num_classes,)

    def compute_output_spec(self, inputs, training=False):
        # Logits are float32 whatever the Keras dtype policy or compute_dtype.
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(dataclasses.asdict(self.cfg))
        return config


def _wrap(variable: tf.Variable, module: tf.Module, name=None, trainable=None):
    """`variable` as a keras.Variable holding the same tf.Variable (no copy)."""
    if name is None:
        name = variable.name
        prefix = module.name_scope.name  # e.g. "r2u_net_layer/r2unet/"
        if name.startswith(prefix):
            name = name[len(prefix):]
        name = name.split(":")[0].replace("/", ".")  # Keras names cannot hold "/"
    wrapped = keras.Variable(
        variable, trainable=variable.trainable if trainable is None else trainable,
        autocast=False, name=name,
        aggregation=_AGGREGATIONS.get(variable.aggregation, "none"),
        synchronization=_SYNCHRONIZATIONS.get(variable.synchronization, "auto"))
    if wrapped.value is not variable:  # a Keras change would silently train a copy
        raise RuntimeError(f"keras.Variable copied {variable.name} instead of wrapping it")
    return wrapped
