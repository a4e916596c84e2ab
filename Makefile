# Two commands on a fresh machine: `make demo` edits a held-out ToyWorld clip with the bundled models,
# `make test` runs the tests.
# Both create .venv on first use (CPU build of torch 2.13.0 plus requirements*.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0 -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

.PHONY: demo test bench toyworld
demo: $(STAMP)
	$(PY) -m bench.toyworld.demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/flops.py
	$(PY) bench/step_time.py

toyworld: $(STAMP)
	$(PY) -m bench.toyworld.pipeline
