# fraudstream: common tasks. `make demo` and `make test` are the two to know.
#
# Everything runs inside a virtualenv at $(VENV), created on first use with a
# Python >= 3.11. The local Kafka launcher needs only java (17+) and mvn.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PY := $(VENV)/bin/python
KAFKA := python3 deploy/kafka/localkafka.py
# Re-install whenever the dependency list changes.
INSTALLED := $(VENV)/.installed

.PHONY: help install test test-faults lint topics demo bench bench-quick kafka-up kafka-status kafka-stop kafka-down clean

help:
	@echo "make demo          train on synthetic data, stream it through the worker, print a summary"
	@echo "make test          install everything and run the whole test suite against a real broker"
	@echo "make test-faults   the long fault-injection runs (kill -9, broker stop, failover)"
	@echo "make install       create $(VENV) and install fraudstream with the train and test extras"
	@echo "make lint          ruff and mypy"
	@echo "make bench         throughput and latency benchmark (bench/results/latest.json)"
	@echo "make bench-quick   the same with small inputs, about a minute"
	@echo "make topics        create the worker's topics (PARTITIONS=3 input partitions)"
	@echo "make kafka-up      start the local Kafka broker on 127.0.0.1:\$${KAFKA_PORT:-9092}"
	@echo "make kafka-status  is it running, where, which pid"
	@echo "make kafka-stop    stop it, keep its data"
	@echo "make kafka-down    stop it and delete its data"
	@echo "make clean         remove build and test caches and out/"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "fraudstream needs Python >= 3.11; found $$($(PYTHON) --version 2>&1) at $(PYTHON). Set PYTHON=/path/to/python3.11." >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,test]'
	@touch $@

# The session fixture in tests/conftest.py starts the local broker when none is
# reachable and stops only a broker it started itself. Prometheus and promtool
# (Debian's prometheus package) check the deploy/ files and scrape a live worker.
test: install
	sh deploy/prometheus/ensure-prometheus.sh
	$(PY) -m pytest -m "not slow"

# The long fault-injection runs: 100,000 events, repeated kills, both guarantees.
test-faults: install
	$(PY) -m pytest -m slow tests/faults -v

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy worker trainer schemas bench deploy/demo.py tests/ops

demo: install
	$(PY) deploy/demo.py

bench: install
	$(PY) -m bench.run

bench-quick: install
	$(PY) -m bench.run --quick

# Creates the default topics on $$KAFKA_BOOTSTRAP_SERVERS (or 127.0.0.1:$$KAFKA_PORT);
# topics that exist already are left as they are.
PARTITIONS ?= 3
topics: install
	@$(PY) -c 'import os, sys; \
	from confluent_kafka.admin import AdminClient, NewTopic; \
	bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:" + os.environ.get("KAFKA_PORT", "9092"); \
	admin = AdminClient({"bootstrap.servers": bootstrap}); \
	wanted = {"transactions": $(PARTITIONS), "fraud-alerts": 3, "transactions.dlq": 1, "scores": 3}; \
	futures = admin.create_topics([NewTopic(t, n, 1) for t, n in wanted.items()]); \
	[print(t, "created" if f.exception() is None else f.exception().args[0].str()) for t, f in futures.items()]'

kafka-up:
	@$(KAFKA) up

# Exits 3 when no broker runs, so scripts can test it; make then reports "Error 3".
kafka-status:
	@$(KAFKA) status

kafka-stop:
	@$(KAFKA) stop

kafka-down:
	@$(KAFKA) down

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache out
