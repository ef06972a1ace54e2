# The two commands of the README: `make demo` (train on the built-in dataset) and
# `make test` (the whole suite). Both create .venv and install the package first, with
# the exact versions of constraints.txt (setup.cfg only declares the supported ranges).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The oldest TensorFlow of setup.cfg's range, in a venv of its own (build/ is ignored).
OLDEST_TF ?= 2.16.2
OLDEST_VENV := build/venv-tf$(OLDEST_TF)
CORE_TESTS := tests/layers_test.py tests/blocks_test.py tests/models_test.py \
	tests/export_test.py \
	tests/train_test.py::TrainLoopTest::test_end_to_end_writes_checkpoints_summaries_config_and_export

.PHONY: demo test test-packaging test-oldest bench clean

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# benchmarks extra: matplotlib, so the curves smoke test runs instead of skipping
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,benchmarks]'
	touch $@

demo: $(VENV)/.installed
	rm -rf runs/demo
	$(PY) bin/train --dataset=synthetic --model_dir=runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

# The wheel and its console scripts alone (also part of `make test`).
test-packaging: $(VENV)/.installed
	$(PY) -m pytest -q -m packaging tests/packaging_test.py

# The core tests on the oldest supported TensorFlow (and the newest numpy it allows).
$(OLDEST_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet "tensorflow==$(OLDEST_TF)" -e '.[test]'
	touch $@

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -c "import tensorflow as tf; print('TensorFlow', tf.__version__)"
	$(OLDEST_VENV)/bin/python -m pytest -q $(CORE_TESTS)

bench: $(VENV)/.installed
	$(PY) bin/bench --json=benchmarks/results/bench.json

clean:
	rm -rf $(VENV) runs build
