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

# The real Mistral-7B v0.x tokenizer, read out of the mistral-common wheel (never installed: it would
# change transformers' tokenizer choice). Without a registry the download fails and those tests skip.
MISTRAL_WHEEL := .cache/wheels/mistral_common-1.9.1-py3-none-any.whl

$(MISTRAL_WHEEL): | $(STAMP)
	-$(BIN)/pip download --quiet --no-deps --dest .cache/wheels mistral-common==1.9.1

# One worker per core (at most 4), whole files per worker: the suite is dominated by real
# llamafactory-cli runs, and a file's fixtures are built once.
test: $(STAMP) $(MISTRAL_WHEEL)
	HF_HUB_OFFLINE=1 MEDFACTORY_MISTRAL_COMMON_WHEEL=$(abspath $(MISTRAL_WHEEL)) $(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

clean:
	rm -rf $(VENV) saves/demo data/demo
