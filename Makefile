# durable-rules needs CPython 3.11 or 3.12: take the first interpreter that is one.
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do $$p -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13)' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock

.PHONY: install lock lint test serve bench profile soak audit editor clean

# Installs exactly the versions in requirements.lock (constraints), so every machine and the image run the same set.
install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c $(LOCK) pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

# requirements.lock: the whole set a `.[dev]` install resolves to, transitive packages included, each at one exact
# version. pip-compile (pip-tools, a dev dependency) resolves pyproject.toml's ranges, keeping the pins already in the
# lock that still fit them (`make lock UPGRADE=1` takes the newest release of everything instead); --allow-unsafe
# pins pip and setuptools too. Run it after changing a dependency, then `make install`.
lock: install
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --rebuild $(if $(UPGRADE),--upgrade) \
		--extra dev --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --output-file $(LOCK) \
		pyproject.toml

# Style, import order and types (configured in pyproject.toml); `make test` runs it before the tests.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Two processes, each taking a whole test file at a time (module-scoped servers start once per file).
test: install lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The example requests are written for today first, so the README's call shows the protocol at work.
serve: install
	$(BIN)/cdsrules examples
	$(BIN)/cdsrules serve --rules rules --no-auth --workbench

bench: install
	$(BIN)/python -m bench

# Where a worker spends its time under load (py-spy; needs ptrace: root or CAP_SYS_PTRACE). HOOK=patient-view etc.,
# RULESET=<ruleset id> (default: the first served one with a scenario file).
profile: install
	$(BIN)/python -m bench.profile $(or $(HOOK),order-sign) $(RULESET)

# The long variants: 8 clients x 10,000 calls, 30,000 fuzzed requests (their figures go in the closing notes).
soak: install
	HYPOTHESIS_PROFILE=explore CONCURRENT_CALLS=10000 FUZZ_EXAMPLES=30000 $(BIN)/python -m pytest -q \
		tests/test_concurrency.py tests/test_fuzz.py tests/test_store.py

# Known vulnerabilities in the pinned dependencies (needs PyPI's JSON API or OSV to be reachable).
audit: install
	$(BIN)/pip-audit --skip-editable --strict --progress-spinner off

# The check page's editor: CodeMirror 6 at the versions in webhook/workbench/editor/package-lock.json, bundled into
# webhook/workbench/static/vendor/editor.js with its licences beside it. Needs Node.js and npm; the bundle is committed,
# so installing and testing do not.
editor:
	cd webhook/workbench/editor && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf $(VENV) .pytest_cache
