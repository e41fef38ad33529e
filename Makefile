# The two commands a fresh machine needs: `make run` and `make test`.
# Both create .venv and install the project into it first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test install gen check-gen lint typecheck fmt breaking release-proto pytest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole stack on local emulators (Ctrl-C stops everything it started)
run: $(STAMP)
	$(BIN)/paynow-service dev

## test: buf lint + breaking, generated-code drift, ruff, mypy, then pytest (emulator tests included)
test: $(STAMP) lint check-gen breaking typecheck pytest

gen: $(STAMP)
	scripts/gen.sh .

check-gen: $(STAMP)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	scripts/gen.sh "$$tmp" >/dev/null; \
	if ! diff -r -q "$$tmp/paynow_service/gen" paynow_service/gen -x __pycache__ \
	   || ! diff -q "$$tmp/paynow_service/schema/payment_event.proto" paynow_service/schema/payment_event.proto; then \
	  echo "Generated code is out of date with proto/: run 'make gen' and commit the result." >&2; exit 1; \
	fi; echo "generated code matches proto/"

lint: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

breaking: $(STAMP)
	$(BIN)/buf breaking --against proto-baseline/released.binpb
	@echo "buf breaking: no breaking change against the released baseline (proto-baseline/)"

## release-proto: make the current proto/ the baseline later changes must stay compatible with
release-proto: $(STAMP)
	$(BIN)/buf build -o proto-baseline/released.binpb

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
