# Two commands on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   -> creates .venv, installs flowedge, runs the offline demo
#   make test   -> same set-up, then the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Empty (default): torch comes from the configured PyPI like everything else; on Linux
# x86-64 that is the CUDA build (about 3 GB with its nvidia-* wheels, runs on CPU too).
# A CPU-only machine with internet can take the 200 MB CPU build instead (on a new .venv):
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
# torch and torchvision then come from that index first, within setup.py's torch versions.
TORCH_INDEX ?=
TORCH_VERSIONS := $(shell sed -n 's/.*"torch\([<>=~!][^"]*\)".*/\1/p' setup.py)

.PHONY: setup demo test lint bench clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(strip $(TORCH_INDEX)),)
	$(PY) -m pip install -q --index-url $(TORCH_INDEX) "torch$(TORCH_VERSIONS)" torchvision
endif
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
