"""Shared pytest set-up: quiet TensorFlow, drop tf.test.TestCase's inherited non-test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The kernels the r2u commands run with (they set this before TensorFlow loads).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase defines `test_session` (a deprecated context manager, not a test);
    # pytest would collect and skip it in every class.
    items[:] = [item for item in items if item.name != "test_session"]
