"""Data: readers of the named datasets (`isic`, `retina`, `synthetic`) and of a user's
folder (`folder`, `nnunet`, `labels`), image files (`imageio`), what a dataset is
prepared from (`sources`) and its preparation into TFRecord shards (`prepare`,
`tfrecord`, `manifest`) with its fingerprint (`fingerprint`, `distance`,
`components`), the training plan derived from it (`plan`), a prepared dataset as one
object (`prepared`) and the input pipelines (`pipeline`, `preprocess`, `augment`,
`patches`).

Submodules are imported explicitly (e.g. `from r2u.data import tfrecord`);
nothing heavy is imported here.
"""
