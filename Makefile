# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install everything the project needs (system packages included).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test lint bench clean-venv system-deps

$(STAMP): pyproject.toml constraints/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints/dev.txt -e '.[dev]'
	touch $(STAMP)

# Debian packages: only fonts are used (phantom overlay text); everything else ships in wheels
# (Tesseract comes inside the tesserocr wheel). Installed only where missing and apt exists.
system-deps:
	@if ! fc-list 2>/dev/null | grep -qi dejavu; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core fontconfig >/dev/null) \
	    || echo "note: could not install fonts-dejavu-core; the phantom falls back to OpenCV fonts"; \
	  fi; \
	fi

demo: $(STAMP) system-deps
	$(VENV)/bin/usfmae demo --out $(DEMO_OUT)

test: $(STAMP) system-deps
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

bench: $(STAMP)
	@for b in bench/*.py; do $(PY) $$b; done

clean-venv:
	rm -rf $(VENV)
