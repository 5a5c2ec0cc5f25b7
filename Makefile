# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs, runs the demo (CPU, or the GPU where CuPy sees one)
#   make test   creates .venv, installs, runs every test and executes every notebook
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REFSTAMP := $(VENV)/.reference
# REFERENCE=1 also installs the optional references (PyTorch, pycocotools) and Dask
# (requirements-reference.txt); without it nothing of several gigabytes is installed and the
# comparisons with them skip. CI (.ci/run) runs `make test REFERENCE=1`.
REFERENCE ?= 0
# A GPU machine whose system Python already imports CuPy shares it with the environment
# (--system-site-packages) rather than installing a second one; tools/install_cupy.py installs the
# wheel for the driver's CUDA version where a GPU answers and CuPy does not import. No GPU: no change.
VENV_FLAGS := $(shell $(PYTHON) -c 'import cupy' >/dev/null 2>&1 && echo --system-site-packages)
# `make gpu-check` runs with the environment's Python where there is one, else the system's (the
# lent GPU machines have CuPy, PyTorch and the rest installed, and no network to make a venv).
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))

.PHONY: demo test test-reference bench gpu-check notebooks clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) tools/install_cupy.py
	@# make this checkout importable from the venv (what an editable install does, with no build step)
	$(PY) -c "import os, site; open(os.path.join(site.getsitepackages()[0], 'tinyrcnn-checkout.pth'), 'w').write(os.getcwd() + '\n')"
	touch $(STAMP)

$(REFSTAMP): $(STAMP) requirements-reference.txt
	@# one package at a time: one that cannot be installed leaves the others (its comparisons skip)
	@grep -v '^#' requirements-reference.txt | sed 's/#.*//' | while read -r req; do \
	  [ -z "$$req" ] || $(PY) -m pip install -q "$$req" || echo "not available: $$req (its comparisons will skip)"; done
	touch $(REFSTAMP)

demo: $(STAMP)
	$(PY) -m tinyrcnn demo --out out/demo

test: $(STAMP) $(if $(filter 1,$(REFERENCE)),$(REFSTAMP))
	$(PY) -m pytest tests -q

test-reference:
	$(MAKE) test REFERENCE=1

bench: $(STAMP)
	$(PY) -m tinyrcnn bench

# One call on a GPU machine: the GPU tests, compute-sanitizer, the GPU benchmarks against PyTorch and
# a short GPU demo, into out/gpu-check/report.md and report.json. Without a GPU it runs the same
# steps on the strict CuPy stand-in of the tests and marks the GPU-only ones "needs a GPU".
gpu-check:
	$(GPU_PY) -m tinyrcnn gpu-check --out out/gpu-check

# Execute every chapter on the CPU (5-8 minutes) and write notebooks/NN_name.ipynb with its outputs
# beside its .py source; `make notebooks CHAPTERS="02 06_detection"` rebuilds only those.
CHAPTERS ?=
notebooks: $(STAMP)
	$(PY) notebooks/build.py $(CHAPTERS)

clean:
	rm -rf $(VENV) out .pytest_cache
