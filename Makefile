# Two commands matter: `make demo` and `make test`. Everything else is a step they call.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PACKAGES := $(wildcard schemas meshcore istiod_lite ztunnel waypoint meshctl)
PYTEST_ARGS ?=

.PHONY: test demo lint typecheck unit venv system-deps clean crds bench bench-quick

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Outside tools the interop and netns tests use. Installed only where we are root and apt exists;
# elsewhere the tests that need them skip with a reason.
system-deps:
	@bash .ci/system-deps

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy $(PACKAGES)

unit: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: system-deps lint typecheck unit

demo: $(STAMP)
	$(VENV)/bin/meshctl demo

# Side by side with a direct connection and Envoy (bench/README.md); never part of `make test`.
bench: system-deps $(STAMP)
	$(PY) -m bench.run

bench-quick: system-deps $(STAMP)
	$(PY) -m bench.run --quick

crds: $(STAMP)
	$(PY) -m schemas.crds deploy/crds

clean:
	rm -rf $(VENV) .mesh .mypy_cache .ruff_cache
