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

.PHONY: demo test test-reference bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
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

clean:
	rm -rf $(VENV) out .pytest_cache
