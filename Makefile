# hookstream: `make run` starts the whole pipeline on this machine; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint kafka-start kafka-stop bench-ingress bench-streams bench-scheduler bench-notifier clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/hookstream up

lint: install
	$(BIN)/ruff check .

# Tests start what they need themselves: the local Kafka broker (unless
# HOOKSTREAM_KAFKA_BOOTSTRAP names one) and PostgreSQL (unless HOOKSTREAM_TEST_POSTGRES_URL does).
test: install lint
	$(BIN)/pytest -q -p no:cacheprovider

kafka-start: install
	$(BIN)/hookstream kafka start

kafka-stop: install
	$(BIN)/hookstream kafka stop

bench-ingress: install
	command -v wrk >/dev/null || { echo "installing wrk (Debian package) for the benchmark"; apt-get update -qq && apt-get install -y -qq wrk; }
	$(BIN)/python bench/ingress.py

bench-streams: install
	$(BIN)/python bench/streams.py

bench-scheduler: install
	$(BIN)/python bench/scheduler.py

bench-notifier: install
	$(BIN)/python bench/notifier.py

clean:
	-$(BIN)/hookstream kafka stop
	rm -rf var
