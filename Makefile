# The two commands of a fresh Linux machine (Python 3.11 or 3.12 with venv, and make):
#   make demo   sets everything up and runs the offline CPU demo of the main job
#   make test   sets everything up and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medfactory-installed

.PHONY: install demo test clean

install: $(STAMP)

# Re-installs only when the pins change; the editable install picks up code changes by itself.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint constraints.txt --editable ".[test]"
	touch $@

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/medfactory demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) saves/demo data/demo
