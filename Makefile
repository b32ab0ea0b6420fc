# One task runner for the whole platform. `make run` and `make test` set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# requirements.lock is what the image runs; requirements-dev.lock adds tests, lint and type checks.
LOCKS  := requirements.lock requirements-dev.lock
STAMP  := $(VENV)/.installed-$(shell cat $(LOCKS) | sha1sum | cut -c1-12)

# The runtime dependencies of pyproject.toml, or every optional (test, dev) one.
DEPS_OF := import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] if sys.argv[1] == "runtime" else [d for ds in p["optional-dependencies"].values() for d in ds]))

.DEFAULT_GOAL := help
.PHONY: help venv protos redis-server chromium run run-clean test lint fmt lock clean chaos bench bench-peers bench-files

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

# The pinned dependencies, then the project itself: editable, without dependencies (the locks have
# them), which puts the `wealthai` command in .venv/bin (built offline with the lock's setuptools).
# The locks are installed by uv, pinned here: the same packages as pip installs from them, in
# half a minute rather than the two pip takes (both measured from PyPI on a 2-core machine);
# when uv cannot install them (an index only pip is set up for), pip does. Both compile the
# bytecode as they install: where PYTHONDONTWRITEBYTECODE is set, nothing would cache it later,
# and every process of the tests would compile its libraries again.
UV := uv==0.13.9
$(STAMP): $(LOCKS) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(UV)
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements-dev.lock \
		|| $(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP) ## Create or refresh the virtualenv from requirements-dev.lock (and the wealthai command).

protos: $(STAMP) ## Regenerate the gRPC stubs from protos/.
	$(BIN)/python scripts/gen_protos.py

# The workers share limits, budgets and breakers through Redis when several run (make run, the
# tests): Debian's redis-server, installed on first use (CI runs on a fresh machine as root).
redis-server: ## Install redis-server when it is missing.
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

# The dashboard's browser test drives Debian's chromium (Playwright's own browser download is
# not used), installed on first use like redis-server.
chromium: ## Install chromium (the dashboard's browser test) when it is missing.
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

run: protos redis-server ## Start the whole platform locally (SeaweedFS S3 on disk, Redis, simulator, every service).
	$(BIN)/python -m scripts.devstack

run-clean: ## Wipe make run's S3 data (tasks, API keys): $DEVSTACK_DIR/s3, .run/s3 by default.
	rm -rf "$${DEVSTACK_DIR:-.run}/s3"

# The unit and service tests keep the CPU busy while the end-to-end ones mostly wait on their
# processes, so the two suites run side by side, the end-to-end files on two workers (each
# file's stack in one of them); the first suite's report follows the second's (the whole of it
# when it failed).
test: protos redis-server chromium ## Run the whole test suite (unit and end-to-end suites side by side).
	@mkdir -p .run
	@$(BIN)/python -m pytest --ignore=tests/e2e --ignore=tests/bench -p no:cacheprovider \
		> .run/unit-tests.log 2>&1 & unit=$$!; \
	$(BIN)/python -m pytest -n 2 --dist loadfile tests/e2e tests/bench; e2e=$$?; \
	wait $$unit; unit=$$?; \
	echo "== unit and service tests (full log: .run/unit-tests.log)"; \
	if [ $$unit -eq 0 ]; then tail -n 30 .run/unit-tests.log; else cat .run/unit-tests.log; fi; \
	[ $$unit -eq 0 ] && [ $$e2e -eq 0 ]

bench: protos redis-server ## Benchmarks: the platform beside the Celery peer, then its own scenarios (bench/README.md; PEERS_ARGS, ARGS="--scenario a").
	$(BIN)/python -m bench.peers $(or $(PEERS_ARGS),--scenario all)
	$(BIN)/python -m bench.perf $(or $(ARGS),--scenario all)

bench-peers: protos redis-server ## The platform beside the Celery peer only (bench/README.md; ARGS="--scenario steady --long").
	$(BIN)/python -m bench.peers $(or $(ARGS),--scenario all)

bench-files: protos ## File benchmark: 350 MB up and down through the gateway vs straight to S3 (bench/README.md).
	$(BIN)/python -m bench.files $(ARGS)

chaos: protos redis-server ## Chaos run: kill -9 services at random under load (bench/README.md; ARGS=--help).
	$(BIN)/python -m bench.chaos $(ARGS)

lint: protos ## Lint, format check and strict type check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy common gateway orchestrator section_worker storage_svc simulator scripts bench wealthai_client

fmt: $(STAMP) ## Format the code and sort imports.
	$(BIN)/ruff check --fix --select I .
	$(BIN)/ruff format .

# --all keeps setuptools, which grpcio-tools needs; the extras install against the runtime pins
# (-c), so the dev set never moves a runtime version.
lock: ## Re-resolve requirements.lock (runtime) and requirements-dev.lock from pyproject.toml.
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -c '$(DEPS_OF)' runtime > $(VENV)-lock/runtime.txt
	$(VENV)-lock/bin/python -c '$(DEPS_OF)' extras > $(VENV)-lock/extras.txt
	$(VENV)-lock/bin/python -m pip install -q -r $(VENV)-lock/runtime.txt
	{ echo '# Runtime dependencies only: what the image installs. Regenerate both locks with `make lock`.'; $(VENV)-lock/bin/python -m pip freeze --all --exclude pip; } > requirements.lock
	$(VENV)-lock/bin/python -m pip install -q -r $(VENV)-lock/extras.txt -c requirements.lock
	{ echo '# Tests, lint and type checks on top of the runtime set; `make` installs this into .venv.'; echo '# Regenerate both locks with `make lock` after changing pyproject.toml.'; echo '-r requirements.lock'; $(VENV)-lock/bin/python -m pip freeze --all --exclude pip | grep -vxFf requirements.lock; } > requirements-dev.lock
	rm -rf $(VENV)-lock

clean: ## Remove the virtualenv, generated stubs and caches.
	rm -rf $(VENV) wealthai .pytest_cache .mypy_cache .ruff_cache .run build *.egg-info
