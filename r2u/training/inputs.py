"""What a training run feeds its step: the training stream, the length of an epoch and
the class weights of the loss, from the experiment and the prepared data."""

import tensorflow as tf

from r2u import config as config_lib
from r2u.data import prepared
from r2u.training import distribute
from r2u.training import epochs as epochs_lib


def training_dataset(data: prepared.PreparedData, exp: config_lib.Experiment,
                     ctx: tf.distribute.InputContext, done: int) -> tf.data.Dataset:
    """This input pipeline's endless, seeded training stream, `done` steps in."""
    cut, cfg = exp.data, exp.train
    distribute.log_shards(ctx, data.shard_paths("train"))
    return data.dataset(
        "train", batch_size=ctx.get_per_replica_batch_size(cfg.batch_size),
        training=True, patch_size=cut.patch_size,
        patches_per_image=cut.patches_per_image, preprocessing=exp.preprocessing,
        augment=cut.augment, mirror=cut.flip_left_right, seed=cfg.seed,
        cache=cut.cache, input_context=ctx,
        **epochs_lib.evaluation_resampling(exp)).skip(
            distribute.batches_to_skip(ctx, done))


def steps_per_epoch(data: prepared.PreparedData, exp: config_lib.Experiment) -> int:
    """`steps_per_epoch`, else one pass over the training images (times patches per
    image for patch training)."""
    if exp.train.steps_per_epoch:
        return exp.train.steps_per_epoch
    examples = data.split("train").num_examples
    if exp.data.patch_size:
        examples *= exp.data.patches_per_image
    return max(1, examples // exp.train.batch_size)


def class_weights(spec: str, data: prepared.PreparedData):
    """The loss's class weights: the data's (auto), none, or one per class given."""
    if spec == "none":
        return None
    if spec == "auto":
        return list(data.class_weights)
    weights = config_lib.parse_weights(spec)
    if len(weights) != data.num_classes:
        raise ValueError(f"class_weights {spec!r} has {len(weights)} weights for "
                         f"{data.num_classes} classes")
    return weights
