# chorus: `make demo` runs a whole local network, `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, so no package pulls a multi-GB CUDA build (GPU users: see README)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/chorus localnet --miners 3 --rounds 6 --out demo-out

test: $(STAMP)
	$(VENV)/bin/ruff check chorus tests
	$(PY) -m pytest -q -x tests

lint: $(STAMP)
	$(VENV)/bin/ruff check chorus tests
	$(VENV)/bin/ruff format --check chorus tests

clean:
	rm -rf $(VENV) demo-out .pytest_cache
