"""Data: dataset readers, TFRecord shards, manifests and input pipelines.

Submodules are imported explicitly (e.g. `from r2u.data import tfrecord`);
nothing heavy is imported here.
"""
