"""The `tf.distribute` side of the one training loop: strategies, workers, agreement.

Data parallelism. Every replica runs the same step on its share of the global batch:
`global batch / replicas` examples, read from its worker's disjoint subset of shard
files. Gradients, losses and metrics are reduced across replicas, and every replica
applies the same update, so the weights stay identical.

Batch norm stays replica-local: each replica normalises with the statistics of its own
share of the batch (no extra communication per layer), and the moving statistics are
averaged across replicas when read or saved. So N replicas of batch B/N are not exactly
one device with batch B: they match when every share has the same per-channel batch
statistics, and differ by the usual small-batch-norm effect otherwise.

Several workers (`multi_worker`): every worker runs the same host loop, because saving a
checkpoint, reading the averaged batch-norm statistics and the training metrics are
collective operations that need all of them. Only the chief writes to `model_dir`; the
others write to a private folder (`worker_dir`) that is deleted at the end, as the
TensorFlow multi-worker guide recommends. On restart every worker restores the chief's
latest checkpoint, so `model_dir` must be on a filesystem every worker can read.
Decisions taken from host values (keep the best checkpoint? stop early?) use the
chief's numbers (`from_chief`), so all workers always make the same collective calls.
"""

import contextlib
import json
import os
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


def num_workers_in_tf_config() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}").get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """auto: multi_worker if TF_CONFIG names several workers, mirrored for several GPUs."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        if num_workers_in_tf_config() > 1:
            name = "multi_worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
        logging.info("strategy=auto -> %s", name)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes taking part in `strategy` (1 for the default and mirrored strategies)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return sum(len(spec.get(job, [])) for job in ("chief", "worker"))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only the chief writes summaries, exports and the real checkpoints."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return (resolver.task_type == "chief"
            or (resolver.task_type == "worker" and resolver.task_id == 0
                and "chief" not in resolver.cluster_spec().as_dict()))


@contextlib.contextmanager
def worker_dir(strategy: tf.distribute.Strategy, model_dir: str) -> Iterator[str]:
    """Where this worker writes: `model_dir` for the chief, else a private folder.

    The private folder, `model_dir/.worker-<index>`, is emptied on entry (removing what a
    killed worker left) and deleted on exit, whether training ended or failed.
    """
    if is_chief(strategy):
        os.makedirs(model_dir, exist_ok=True)
        yield model_dir
        return
    path = os.path.join(model_dir, f".worker-{strategy.cluster_resolver.task_id}")
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
    tf.io.gfile.makedirs(path)
    try:
        yield path
    finally:
        tf.io.gfile.rmtree(path)


def from_chief(strategy: tf.distribute.Strategy, values: Sequence[float]) -> np.ndarray:
    """The chief's `values` on every worker (a collective: every worker must call it).

    Host decisions (keep this checkpoint? stop?) must be identical on all workers,
    whose own numbers may differ in the last bits. The chief's first replica
    contributes its values and every other replica zeros, and a sum is exact.
    """
    local = np.asarray(values, np.float64)
    if num_workers(strategy) == 1:
        return local
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(local * float(ctx.replica_id_in_sync_group == 0)))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns on each worker once every worker has called it."""
    from_chief(strategy, [0.0])


def check_same_step(strategy: tf.distribute.Strategy, step: int, model_dir: str) -> None:
    """Raises ValueError on every worker unless all restored the chief's step.

    A worker that cannot read the chief's checkpoints would silently train other weights.
    """
    if num_workers(strategy) == 1:
        return
    differs = float(from_chief(strategy, [step])[0] != step)
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(differs, tf.float64))
    if float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)):
        raise ValueError(f"workers start from different steps (this one: {step}): every "
                         f"worker must read the chief's checkpoints in {model_dir}")


def log_shards(ctx: tf.distribute.InputContext, files: Sequence[str]) -> None:
    """Logs which shard files this input pipeline reads (`pipeline.make_dataset` rule)."""
    if ctx.num_input_pipelines > 1:
        mine = files[ctx.input_pipeline_id::ctx.num_input_pipelines]
        logging.info("input pipeline %d of %d reads %s", ctx.input_pipeline_id,
                     ctx.num_input_pipelines, ",".join(os.path.basename(f) for f in mine))


def copy_variables(source: tf.Module, target: tf.Module) -> None:
    """Assigns `source`'s variables (replicated or not) to `target`'s, in order.

    A replica-local value (batch-norm statistics) is read as its mean over replicas:
    under several workers this is a collective, so every worker must call it.
    """
    pairs = list(zip(source.variables, target.variables, strict=True))
    for src, dst in pairs:
        if (src.name, src.shape) != (dst.name, dst.shape):
            raise ValueError(f"cannot copy {src.name} {src.shape} to {dst.name} "
                             f"{dst.shape}")
    for src, dst in pairs:
        dst.assign(src.read_value())


def batches_to_skip(ctx: tf.distribute.InputContext, steps: int) -> int:
    """Batches one input pipeline has produced after `steps` global steps.

    Each step takes one batch per replica, and a pipeline feeds
    `replicas / pipelines` replicas (2 on one host with 2 GPUs, 1 per worker).
    """
    return steps * ctx.num_replicas_in_sync // ctx.num_input_pipelines
