# The two commands of the README: `make demo` (train on the built-in dataset) and
# `make test` (the whole suite). Both create .venv and install the package first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	rm -rf runs/demo
	$(PY) bin/train --dataset=synthetic --model_dir=runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bin/bench --json=benchmarks/results/bench.json

clean:
	rm -rf $(VENV) runs
