"""Shared pytest set-up: quiet TensorFlow, drop tf.test.TestCase's inherited non-test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The kernels the r2u commands run with (they set this before TensorFlow loads).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


import pytest  # noqa: E402

# Real-data tests skip, naming the folder, when the shared datasets are absent. Where they
# must be present (CI beside ../shared), R2U_REQUIRE_DATA=1 turns those skips into failures.
_MISSING_DATA = ("data not found at", "not found at")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and os.environ.get("R2U_REQUIRE_DATA") == "1"
            and any(m in str(report.longrepr) for m in _MISSING_DATA)):
        report.outcome = "failed"
        report.longrepr = f"R2U_REQUIRE_DATA=1 but the data is missing: {report.longrepr}"


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase defines `test_session` (a deprecated context manager, not a test);
    # pytest would collect and skip it in every class.
    items[:] = [item for item in items if item.name != "test_session"]
