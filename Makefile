# Two commands on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   -> creates .venv, installs flowedge, runs the offline demo
#   make test   -> same set-up, then the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flowedge demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -ra tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) bench/backends.py
	$(PY) bench/pipeline.py

clean:
	rm -rf runs .pytest_cache build *.egg-info
