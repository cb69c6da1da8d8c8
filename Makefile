# The two commands: `make run` and `make test`. Everything else is their plumbing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
JS_STAMP := node_modules/.installed
CLIENTS_STAMP := tests/clients/node_modules/.installed

.PHONY: run test install lint format schema bench mutants fuzz

run: install
	$(BIN)/portico serve

test: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	PORTICO_TEST_DATABASE=sqlite $(BIN)/pytest
	PORTICO_TEST_DATABASE=postgres $(BIN)/pytest

install: $(PY_STAMP) $(JS_STAMP) $(CLIENTS_STAMP)

$(PY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# GraphiQL's pinned scripts and styles, served by Portico itself (never from a CDN).
$(JS_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Stock GraphQL clients (Apollo, urql, graphql-ws, codegen...) that tests/test_clients.py runs.
$(CLIENTS_STAMP): tests/clients/package.json tests/clients/package-lock.json
	npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
	touch $@

format: $(PY_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

schema: $(PY_STAMP)
	$(BIN)/portico export-schema > schema.graphql

# Benchmarks (never part of `make test`): mass_send, deliveries and mail_sync need PostgreSQL,
# mail_sync Dovecot, fanout Redis, http wrk (Debian: apt-get install -y wrk), deliveries
# Postfix's smtp-sink (apt-get install -y postfix) or `--sink aiosmtpd`.
bench: install
	$(BIN)/python -m bench
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.mass_send
	$(BIN)/python -m bench.deliveries
	$(BIN)/python -m bench.mail_sync
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.validation

# Mutation testing of LOGIN's and NOTIFY's rule modules (never part of `make test`): slow, about
# an hour on 2 cores. Starts afresh each time; `$(BIN)/mutmut results` lists survivors and
# `$(BIN)/mutmut show NAME` shows one. See docs/testing.md.
mutants: install
	$(BIN)/pip install -q -e ".[test,mutants]"
	rm -rf mutants
	PORTICO_TEST_DATABASE=sqlite $(BIN)/mutmut run
	$(BIN)/mutmut results

# The fuzz stage of CI (never part of `make test`): schemathesis' GraphQL fuzzing against a real
# production-mode server on SQLite and on PostgreSQL, signed out and with a staff token, about
# 5 minutes on 2 cores. `$(BIN)/python -m fuzz --help` runs one stage; see docs/testing.md.
fuzz: install
	$(BIN)/pip install -q -e ".[test,fuzz]"
	$(BIN)/python -m fuzz
