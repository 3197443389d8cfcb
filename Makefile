# Two entry points: `make demo` (the main job) and `make test`. Each creates .venv if missing and installs
# what it needs once (again only when pyproject.toml changes).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# -qq: errors only. A quiet install otherwise still prints the package index's notices, one per package.
PIP    := $(BIN)/python -m pip install -qq

.PHONY: demo test venv clean

# a current pip: the one bundled with Python 3.11 is much slower to resolve and install these dependencies
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "Installing snrmoe-dask and its dependencies into $(VENV) (once; about a minute)"
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "Installing snrmoe-dask with its test and notebook dependencies into $(VENV) (once; about a minute)"
	$(PIP) -e ".[test]"
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/snrmoe demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .demo-data results
