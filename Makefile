# hookstream: `make run` starts the whole pipeline on this machine; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The resolver that writes the lock files (`make lock`); installing from them needs only pip.
UV_VERSION := 0.13.8
LOCK := $(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes \
        --custom-compile-command "make lock" $(LOCK_FLAGS)

.PHONY: install lock run test fleet chaos lint settings-doc kafka-start kafka-stop bench-ingress \
        bench-streams bench-scheduler bench-notifier bench-notifier-claim bench-txn \
        console-screenshots clean

# The locked versions (runtime and test, with hashes), then the project itself without
# dependencies: what pyproject.toml declares is only the lower bound. uv (the lock's own
# resolver, pinned) installs them: ~30 s from a warm cache against pip's ~1.5-2.5 min, which
# `make test` on a clean clone pays every time. Byte-compiled at install, as pip does: else
# the suite's first processes would each compile the packages they import.
UV_INSTALL := $(BIN)/uv pip install -q --python $(BIN)/python
$(STAMP): pyproject.toml requirements-test.lock requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)
	$(UV_INSTALL) --compile-bytecode --require-hashes -r requirements-test.lock
	$(UV_INSTALL) --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolve after a change to pyproject.toml's dependencies. Versions already locked are
# kept where they still fit; `make lock LOCK_FLAGS=--upgrade` (or
# `LOCK_FLAGS="--upgrade-package NAME"`) moves them. The runtime lock is constrained by the
# test lock, so both install the same version of every package they share.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv==$(UV_VERSION)
	$(LOCK) --extra test -o requirements-test.lock
	$(LOCK) -c requirements-test.lock -o requirements.lock

run: install
	$(BIN)/hookstream up

# ruff, then the import contracts of pyproject.toml ([tool.importlinter]: layers, no test code).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# docs/SETTINGS.md from core.settings.Settings (a test fails when the page is stale).
settings-doc: install
	$(BIN)/python -m core.settings_doc

# Tests start what they need themselves: the local Kafka broker (unless
# HOOKSTREAM_KAFKA_BOOTSTRAP names one) and PostgreSQL (unless HOOKSTREAM_TEST_POSTGRES_URL does).
# The console's browser tests drive Debian's Chromium, installed here when missing.
# The alert rules' unit tests run Debian's promtool (package prometheus), installed likewise.
test: install lint
	bash tests/support/ensure_chromium.sh
	bash tests/support/ensure_promtool.sh
	$(BIN)/pytest -q -p no:cacheprovider -m "not fleet" --durations=20

# Issue 13: workers scaled from one to three under load (three worker processes start one
# after the other: 60-80 s on a busy 2-core machine, too long for `make test`).
fleet: install
	$(BIN)/pytest -q -p no:cacheprovider -m fleet tests/streams

# Screenshots of every wizard step and console page, under var/console-screenshots/
# (HOOKSTREAM_SCREENSHOTS_DIR to choose), from a browser walking the console.
console-screenshots: install
	bash tests/support/ensure_chromium.sh
	bash tests/support/console_screenshots.sh

kafka-start: install
	$(BIN)/hookstream kafka start

kafka-stop: install
	$(BIN)/hookstream kafka stop

bench-ingress: install
	command -v wrk >/dev/null || { echo "installing wrk (Debian package) for the benchmark"; apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python bench/ingress.py $(if $(filter 1,$(BENCH_SIGNED)),--signed)

bench-streams: install
	$(BIN)/python bench/streams.py

bench-scheduler: install
	$(BIN)/python bench/scheduler.py

bench-notifier: install
	$(BIN)/python bench/notifier.py

# The notifier's claim and finish alone: SQLAlchemy reference against the driver's cursor.
bench-notifier-claim: install
	$(BIN)/python bench/notifier_claim.py

# CPU-ms per Kafka transaction of the worker's raw loop, alone (issue 17, bench/README.md).
bench-txn: install
	$(BIN)/python bench/txn_cost.py

# The fault-injection suite (issue 13 item 7): a fleet of real processes on a three-broker
# cluster, one round per fault, one line per round at the end (docs/RUNBOOK.md reads them).
# About 15 minutes; `make test` runs its short round (tests/chaos/test_chaos_short.py).
# HOOKSTREAM_CHAOS_SHARED_IDEMPOTENCY=0 gives each ingress replica its own key store (a retry on
# the other replica is then a duplicate: counted as cross_replica).
chaos: install
	$(BIN)/pytest -q -p no:cacheprovider tests/chaos/chaos_full.py

# The idempotency store alone: keyed requests/s on SQLite against PostgreSQL (issue 13).
.PHONY: bench-idempotency
bench-idempotency: install
	$(BIN)/python bench/idempotency.py

clean:
	-$(BIN)/hookstream kafka stop
	rm -rf var
