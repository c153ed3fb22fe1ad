# Two commands on a fresh machine (Python 3.11 + pip + make):
#   make demo   set up .venv, make the built-in demo data, train, evaluate on held-out test, write the report
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch; an unpinned torch may pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q $(TORCH)
	$(VENV)/bin/python -m pip install -q -e '.[test,export,track,audit,datasets,video]'
	touch $@

.PHONY: setup demo test bench-quick mutate clean
setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/attrfit demo --out demo

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

bench-quick: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests/test_bench_quick.py

# Put each bug of bench/mutations.toml into src/ in turn and check its tests fail (minutes; not in `make test`).
mutate: $(VENV)/.installed
	$(VENV)/bin/python bench/mutations.py

clean:
	rm -rf $(VENV) demo runs .pytest_cache
