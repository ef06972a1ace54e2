"""Shared pytest set-up: quiet TensorFlow, drop tf.test.TestCase's inherited non-test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import r2u  # noqa: E402,F401  (before any test imports TensorFlow: the kernels users get)


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase defines `test_session` (a deprecated context manager, not a test);
    # pytest would collect and skip it in every class.
    items[:] = [item for item in items if item.name != "test_session"]
