# inferwatch: make demo (installs, runs the demo on the embedded bus) and make test (installs, starts
# Apache Kafka on 127.0.0.1, runs lint, types and every test). Nothing here needs Docker.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
KAFKA := deploy/local/kafka.sh
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck unit kafka-up kafka-down clean

install: $(VENV)/.installed

# uv installs from its cache by hard links, so a second checkout on the same machine (CI) reuses the
# torch wheels fetched the first time instead of unpacking gigabytes again.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[all,test]'
	touch $@

demo: install
	$(BIN)/inferwatch demo

lint: install
	$(BIN)/ruff check monitor collectors detectors dashboards tests $(wildcard benchmarks/*.py)

typecheck: install
	$(BIN)/mypy

# The pytest session starts its own broker (deploy/local/kafka.sh with a fresh run dir) and stops it.
test: install lint typecheck
	$(KAFKA) fetch
	$(BIN)/pytest $(PYTEST_ARGS)

kafka-up:
	$(KAFKA) start

kafka-down:
	$(KAFKA) stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
