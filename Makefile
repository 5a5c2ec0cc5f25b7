# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   creates .venv, installs, runs the demo (CPU, or the GPU where CuPy sees one)
#   make test   creates .venv, installs, runs every test and executes every notebook
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# PyTorch is only an optional reference for tests and benchmarks; REFERENCE=0 skips it.
REFERENCE ?= 1

.PHONY: demo test bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	@# make this checkout importable from the venv (what an editable install does, with no build step)
	$(PY) -c "import os, site; open(os.path.join(site.getsitepackages()[0], 'tinyrcnn-checkout.pth'), 'w').write(os.getcwd() + '\n')"
	@if [ "$(REFERENCE)" = "1" ]; then \
	  $(PY) -m pip install -q torch==2.13.0 || echo "PyTorch not available: reference checks will skip"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tinyrcnn demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest tests -q

bench: $(STAMP)
	$(PY) -m tinyrcnn bench

clean:
	rm -rf $(VENV) out .pytest_cache
