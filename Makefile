# The two commands a fresh machine needs: `make demo` (train the built-in tiny model and watch
# it) and `make test`. Both create the virtual environment first when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pins the CPU build of torch on machines without an NVIDIA GPU; on a GPU machine the same pin
# resolves to the CUDA build from PyPI. Set CONSTRAINTS= to install without pins.
CONSTRAINTS ?= constraints-cpu.txt
PIP_CONSTRAINTS := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

.PHONY: venv demo test bench realsize realsize-smoke faults clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(PIP_CONSTRAINTS) -e '.[dev]'
	touch $@

demo: venv
	HF_HUB_OFFLINE=1 $(BIN)/tunerd demo

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python bench/step_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/cache_compress.py

# Every GPU preset on its published architecture against a bare loop (bench/realsize.py): on a GPU,
# the real sizes; `realsize-smoke` runs the same on the CPU at one block of real width (CI, ~10 min).
realsize: venv
	HF_HUB_OFFLINE=1 $(BIN)/python bench/realsize.py

realsize-smoke: venv
	HF_HUB_OFFLINE=1 $(BIN)/python bench/realsize.py --cpu

# The fault suite (kill -9s, a truncated checkpoint, a full disk, a frozen engine): a few minutes, alone.
faults: venv
	HF_HUB_OFFLINE=1 $(BIN)/python bench/faults.py

clean:
	rm -rf $(VENV) demo-runs build *.egg-info
