# Two commands set up everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SECONDS ?= 0

.PHONY: setup test demo bundle clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: setup
	$(PY) -m scripts.demo --seconds $(SECONDS)

# dist/dbus-opendtu-<VERSION>.tar.gz (+ .sha256): the offline GX archive (scripts/bundle.py)
bundle: setup
	$(PY) -m scripts.bundle

clean:
	rm -rf $(VENV) .pytest_cache
