# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install everything the project needs from PyPI (Tesseract is in the tesserocr wheel).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test lint bench clean-venv

$(STAMP): pyproject.toml constraints/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints/dev.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/usfmae demo --out $(DEMO_OUT)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

bench: $(STAMP)
	@for b in bench/*.py; do $(PY) $$b; done

clean-venv:
	rm -rf $(VENV)
