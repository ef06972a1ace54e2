"""keras-unet-collection's R2U-Net on tf-keras (Keras 2): train_on_batch, fit, predict.

Run in its own venv (benchmarks/peers/setup.sh keras); the script sets
TF_USE_LEGACY_KERAS=1 itself, so tf.keras is tf-keras as the package expects:

    benchmarks/peers/.venv-keras/bin/python benchmarks/peers/keras_r2unet.py \
        --image_size 128 --channels 1 --batch_size 8 --steps 10 --dtype bfloat16

The model is `models.r2_unet_2d(input_size, [16, 32, 64, 128, 256], n_labels=2,
stack_num_down=2, stack_num_up=2, recur_num=2, activation='ReLU',
output_activation='Softmax', batch_norm=True, pool='max', unpool=False)` (0.1.13 source:
unpool=False is a 3x3 stride-2 Conv2DTranspose + BN + ReLU). It differs from r2u's
R2U-Net in ways that make it heavier, not lighter: every recurrent step has its own conv
(weights not shared: 6.58M parameters against 2.45M), convs keep a bias before BN, each
decoder level adds a conv3x3-BN-ReLU before the concatenation, and there is no dropout.
Compiled with Adam(1e-3) (global_clipnorm = --clip_norm, as r2u's step clips) and
categorical cross-entropy on one-hot labels. `--dtype bfloat16` sets the Keras policy
"mixed_bfloat16". Prints one JSON record.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from keras_unet_collection import models  # noqa: E402

SEED = 0
FILTERS = [16, 32, 64, 128, 256]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--num_classes", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--channels_last", type=int, choices=(0, 1), default=1,
                   help="Keras is NHWC (channels last) only; 0 is rejected")
    p.add_argument("--threads", type=int, default=2, help="TF intra-op threads")
    p.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    p.add_argument("--clip_norm", type=float, default=1.0, help="0 = off")
    p.add_argument("--jit_compile", type=int, choices=(0, 1), default=0,
                   help="compile(jit_compile=...): XLA for the Keras step")
    p.add_argument("--json", default="", help="also write the JSON record here")
    args = p.parse_args()
    if not args.channels_last:
        p.error("Keras Conv2D on CPU is NHWC only; --channels_last 0 is not supported")
    return args


def log(msg: str) -> None:
    print(f"[keras-unet-collection] {msg}", file=sys.stderr, flush=True)


def build(args) -> tf_keras.Model:
    if args.dtype == "bfloat16":
        tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    tf_keras.utils.set_random_seed(SEED)
    model = models.r2_unet_2d(
        (args.image_size, args.image_size, args.channels), FILTERS,
        n_labels=args.num_classes, stack_num_down=2, stack_num_up=2, recur_num=2,
        activation="ReLU", output_activation="Softmax", batch_norm=True, pool="max",
        unpool=False, name="r2_unet")
    clip = args.clip_norm if args.clip_norm > 0 else None
    opt = tf_keras.optimizers.Adam(learning_rate=1e-3, global_clipnorm=clip)
    model.compile(optimizer=opt, loss=tf_keras.losses.CategoricalCrossentropy(),
                  jit_compile=bool(args.jit_compile))
    return model


def synthetic_batch(args):
    """Fixed-seed random NHWC images and one-hot labels (~25% foreground)."""
    rng = np.random.default_rng(SEED)
    shape = (args.batch_size, args.image_size, args.image_size, args.channels)
    x = rng.standard_normal(shape, dtype=np.float32)
    labels = (rng.random(shape[:3]) < 0.25).astype(np.int64)
    y = np.eye(args.num_classes, dtype=np.float32)[labels]
    return tf.constant(x), tf.constant(y)


def time_calls(step, args):
    """Images/s per repeat of `steps` calls; each call returns host values (synced)."""
    for _ in range(args.warmup):
        step()
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            out = step()
        np.asarray(out)
        rates.append(args.steps * args.batch_size / (time.perf_counter() - start))
    return rates


class EpochTimer(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        float(logs["loss"])  # the epoch's last step has finished
        self.seconds.append(time.perf_counter() - self.start)


def time_fit(model, x, y, args):
    """Images/s per epoch of `steps` model.fit steps over a repeated in-memory batch."""
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=max(args.warmup, 1), epochs=1, verbose=0)
    timer = EpochTimer()
    model.fit(data, steps_per_epoch=args.steps, epochs=args.repeats, verbose=0,
              callbacks=[timer])
    return [args.steps * args.batch_size / s for s in timer.seconds]


def summary(name, rates, args):
    med = statistics.median(rates)
    log(f"{name}: {med:.1f} img/s median ({', '.join(f'{r:.1f}' for r in rates)}); "
        f"{1000 * args.batch_size / med:.1f} ms/step")
    return med


def main():
    args = parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    model = build(args)
    params = int(sum(np.prod(v.shape) for v in model.trainable_weights))
    x, y = synthetic_batch(args)
    log(f"r2_unet_2d: {params:,} params; tf {tf.__version__}, tf-keras "
        f"{tf_keras.__version__}, {args.threads} threads, {args.dtype}, "
        f"jit_compile={args.jit_compile}, "
        f"{args.batch_size}x{args.image_size}x{args.image_size}x{args.channels}")
    record = {
        "peer": "keras-unet-collection", "arch": "r2unet", "params": params,
        "dtype": args.dtype, "channels_last": True, "image_size": args.image_size,
        "channels": args.channels, "batch_size": args.batch_size,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "clip_norm": args.clip_norm, "jit_compile": bool(args.jit_compile),
        "train_img_s": None, "train_img_s_all": [],
        "train_img_s_fit": None, "train_img_s_fit_all": [],
        "infer_img_s": None, "infer_img_s_all": [],
        "tf_version": tf.__version__, "tf_keras_version": tf_keras.__version__,
        "keras_unet_collection_version": metadata.version("keras-unet-collection"),
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }
    if args.mode in ("train", "both"):
        rates = time_calls(lambda: model.train_on_batch(x, y), args)
        record["train_img_s"] = summary("train_on_batch", rates, args)
        record["train_img_s_all"] = rates
        rates = time_fit(model, x, y, args)
        record["train_img_s_fit"] = summary("fit", rates, args)
        record["train_img_s_fit_all"] = rates
    if args.mode in ("infer", "both"):
        rates = time_calls(lambda: model.predict_on_batch(x), args)
        record["infer_img_s"] = summary("predict_on_batch", rates, args)
        record["infer_img_s_all"] = rates
    text = json.dumps(record)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
