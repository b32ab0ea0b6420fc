# One task runner for the whole platform. `make run` and `make test` set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum requirements.lock | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help venv protos run test lint fmt lock clean chaos bench

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP) ## Create or refresh the virtualenv from requirements.lock.

protos: $(STAMP) ## Regenerate the gRPC stubs from protos/.
	$(BIN)/python scripts/gen_protos.py

run: protos ## Start the whole platform locally (moto S3, simulator, every service).
	$(BIN)/python -m scripts.devstack

test: protos ## Run the whole test suite.
	$(BIN)/python -m pytest

bench: protos ## Benchmarks, every scenario (bench/README.md; ARGS="--scenario a").
	$(BIN)/python -m bench.perf $(or $(ARGS),--scenario all)

chaos: protos ## Chaos run: kill -9 services at random under load (bench/README.md; ARGS=--help).
	$(BIN)/python -m bench.chaos $(ARGS)

lint: protos ## Lint, format check and strict type check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy common gateway orchestrator section_worker storage_svc simulator scripts bench

fmt: $(STAMP) ## Format the code and sort imports.
	$(BIN)/ruff check --fix --select I .
	$(BIN)/ruff format .

lock: ## Re-resolve requirements.lock from the ranges in pyproject.toml.
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + [d for ds in p["optional-dependencies"].values() for d in ds]))' > $(VENV)-lock/reqs.txt
	$(VENV)-lock/bin/python -m pip install -q -r $(VENV)-lock/reqs.txt
	{ echo '# Exact versions CI and `make` install; regenerate with `make lock` after changing pyproject.toml.'; $(VENV)-lock/bin/python -m pip freeze; } > requirements.lock
	rm -rf $(VENV)-lock

clean: ## Remove the virtualenv, generated stubs and caches.
	rm -rf $(VENV) wealthai .pytest_cache .mypy_cache .ruff_cache .run
