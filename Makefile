# chorus: `make demo` runs a whole local network, `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSTEM_STAMP := $(VENV)/.system-packages

# Debian packages chorus uses where apt exists: Festival voices for the voice-cloning bank,
# a General MIDI SoundFont and FluidSynth for music, Chromium for the dashboard test.
# Without them chorus still runs: the voice bank reports what is missing, music falls back
# to its built-in synthesizer, and the browser test fails saying what to install.
APT_PACKAGES := festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
	festvox-itapc16k festvox-italp16k festvox-czech-dita festvox-czech-machac \
	festvox-ca-ona-hts festvox-suopuhe-lj festvox-suopuhe-mv \
	fluid-soundfont-gm libfluidsynth3 chromium

# The type checker covers the seams: the service descriptors, their Protocols (backends,
# evaluators) against the shipped implementations, and the error map.
TYPED := chorus/services chorus/errors.py chorus/incentive.py chorus/redteam.py

.PHONY: demo test lint install system-packages clean

install: $(STAMP) $(SYSTEM_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first, so no package pulls a multi-GB CUDA build (GPU users: see README)
	$(PY) -m pip install -q torch==2.13.0
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(PY) -m pip install -q -e '.[dev]'
	# TinySoundFont renders music where FluidSynth's library is missing; its one dependency,
	# pyaudio, is for playback only and needs PortAudio headers to build: skip it
	$(PY) -m pip install -q --no-deps tinysoundfont==0.3.7
	touch $(STAMP)

system-packages: $(SYSTEM_STAMP)

$(SYSTEM_STAMP):
	@mkdir -p $(VENV)
	@if ! command -v apt-get >/dev/null; then \
		echo "note: no apt-get here; install the equivalents of: $(APT_PACKAGES)"; \
	elif [ "$$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then \
		echo "note: not root; ask an administrator to install: $(APT_PACKAGES)"; \
	else \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing Debian packages with apt-get: $(APT_PACKAGES)"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			$(APT_PACKAGES) >/dev/null || echo "warning: some Debian packages did not install"; \
	fi
	@touch $(SYSTEM_STAMP)

demo: install
	$(VENV)/bin/chorus localnet --miners 3 --validators 3 --rounds 6 --out demo-out

test: install
	$(VENV)/bin/ruff check chorus tests
	$(VENV)/bin/mypy --ignore-missing-imports --follow-imports=silent $(TYPED)
	$(PY) -m pytest -q --durations=12 tests  # the slowest, to keep the suite near 15 minutes

lint: install
	$(VENV)/bin/ruff check chorus tests
	$(VENV)/bin/ruff format --check chorus tests
	$(VENV)/bin/mypy --ignore-missing-imports --follow-imports=silent $(TYPED)

clean:
	rm -rf $(VENV) demo-out .pytest_cache
