# Safekeep: two commands on a fresh machine — `make run` and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_NATIVE_TLS := 1
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Bytecode compiled once when the environment is made (as the image's is): where the
# environment says PYTHONDONTWRITEBYTECODE, nothing would ever be cached, and every process
# the tests and benchmarks start would compile the libraries it imports again (about 2.5
# CPU-seconds for the API's or a worker's imports).
export UV_COMPILE_BYTECODE := 1

.PHONY: venv run test lint typecheck openapi image services-start services-stop clean

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --quiet
	touch $@

venv: $(VENV)/.synced

## Start Safekeep on the embedded defaults with a simulated tenant connected.
run: venv
	$(VENV)/bin/safekeep serve --demo

## Install what the tests need, start real services on loopback, run everything, stop the services.
test: venv
	scripts/services start
	set -o pipefail; rc=0; \
	  eval "$$(scripts/services env)"; \
	  $(MAKE) --no-print-directory lint typecheck || rc=$$?; \
	  if [ $$rc -eq 0 ]; then $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; fi; \
	  scripts/services stop; exit $$rc

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

## Regenerate the committed OpenAPI document from the app.
openapi: venv
	$(PY) -m safekeep.api.openapi_dump > openapi/openapi.json

## Build the container image daemonless (buildah, chroot isolation, vfs); tests/test_image.py
## checks the Dockerfile (hadolint) and its build steps on every `make test`.
image: venv
	scripts/image

services-start:
	scripts/services start

services-stop:
	scripts/services stop

clean:
	rm -rf $(VENV) .tools data
