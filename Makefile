# Set-up and entry points. Both `make demo` and `make test` create everything they need
# (virtual environment, pinned pip packages, Debian packages) and are safe to run twice.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS   := $(shell grep -v '^\s*\#' tools/demo_packages.txt | awk '{print $$1}') chromium
DEMO_STEPS ?=

.PHONY: demo test venv debs corpus clean-demo

## demo: build the demo corpus, train the tiny noise-aware DPRNN (STFT magnitudes) on the CPU, evaluate, print results
demo: venv debs
	$(PY) tools/run_demo.py $(if $(DEMO_STEPS),--steps $(DEMO_STEPS))

## test: the whole test suite (unit, integration, recipe smoke tests, doctests)
test: venv debs
	$(PY) -m pytest -q tests nass nass_demo --doctest-modules

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## debs: the Debian packages with the demo corpus's real recordings (and chromium for the page test)
debs:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

corpus: venv debs
	$(PY) tools/build_demo_corpus.py --out data/demo

clean-demo:
	rm -rf results/demo
