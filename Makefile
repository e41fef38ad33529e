# The two commands a fresh machine needs: `make run` and `make test`.
# Both create .venv and install the project into it first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Dependencies come only from the hash-locked requirements-dev.lock (runtime + dev extra + the
# build backend); the project itself is then installed editable with --no-deps, built by the
# locked setuptools (--no-build-isolation: nothing unpinned is fetched). pip is the one the
# interpreter bundles (ensurepip), not a download. The Dockerfile installs requirements.lock.
# The load tool (loadtool/, its own distribution `paynow-loadtest`) is installed the same way:
# editable, --no-deps (its dependencies, matplotlib included, are in the dev lock).
# `make lock`: the Python the locks are resolved for (the Dockerfile's image is 3.11 too);
# --universal keeps markers, so they also install on 3.12/3.13 and other platforms.
LOCK_PYTHON := 3.11
LOCK_ARGS ?=
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version $(LOCK_PYTHON) --generate-hashes \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
BUILD_REQUIRES = $(BIN)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))"

.PHONY: run test install lock gen check-gen lint typecheck fmt breaking release-proto pytest browser clean

$(STAMP): pyproject.toml loadtool/pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e loadtool
	touch $(STAMP)

install: $(STAMP)

## lock: re-resolve both locks from pyproject.toml (other pins kept; LOCK_ARGS='--upgrade-package NAME' or --upgrade moves them)
# The dev lock first; the runtime lock is constrained to it, so the image ships the versions the tests ran.
lock: $(STAMP)
	set -o pipefail; $(BUILD_REQUIRES) | $(UV_COMPILE) pyproject.toml - --extra dev -o requirements-dev.lock
	set -o pipefail; $(BUILD_REQUIRES) | $(UV_COMPILE) pyproject.toml - -c requirements-dev.lock -o requirements.lock

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

pytest: $(STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## browser: Debian's chromium for the console's browser tests (Playwright drives it; its own download is not used)
# Without apt-get (not Debian) nothing is installed and the browser tests skip, saying why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || ! command -v apt-get >/dev/null || { \
	  echo "installing chromium (apt-get) for the browser tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null \
	  || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
