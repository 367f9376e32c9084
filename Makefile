# inferwatch: make demo (installs, runs the demo on the embedded bus) and make test (installs, starts
# Apache Kafka on 127.0.0.1, runs lint, types and every test). Nothing here needs Docker.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
KAFKA := deploy/local/kafka.sh
BENCH_VENV ?= .venv-bench
PYTEST_ARGS ?=

.PHONY: install system-deps bench-install bench demo test lint typecheck kafka-up kafka-down clean gpu-check deploy-tools

# Debian packages the tests and benchmarks use beside Java and Maven: a real Prometheus scrapes the daemon,
# nginx is the sidecar's peer in its benchmark, wrk drives both, headless chromium opens the status page and
# the reports. Installed when missing and we are root.
SYSTEM_PACKAGES := prometheus prometheus-alertmanager nginx wrk chromium

install: $(VENV)/.installed

# uv installs from its cache by hard links, so a second checkout on the same machine (CI) reuses the
# torch wheels fetched the first time instead of unpacking gigabytes again.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[all,test]'
	INFERWATCH_PYTHON=$(BIN)/python deploy/local/fetch_shakespeare.sh
	touch $@

system-deps:
	@missing=""; for c in $(SYSTEM_PACKAGES); do \
	  command -v $$c >/dev/null || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing$$missing from Debian"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "missing$$missing: sudo apt-get install $(SYSTEM_PACKAGES)"; exit 1; fi; fi

# Peer libraries for the side-by-side benchmarks pin numpy<2 and pandas<3: they get their own environment.
bench-install: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check uv
	$(BENCH_VENV)/bin/uv pip install -q --python $(BENCH_VENV)/bin/python -e '.[bench,test]'
	touch $@

# Full-size runs, each printing its table and the ratios against its peers (minutes; not part of make test,
# which runs every benchmark at --quick size as a smoke test).
bench: bench-install
	for b in benchmarks/w*.py; do $(BENCH_VENV)/bin/python $$b || exit 1; done

demo: install
	$(BIN)/inferwatch demo

lint: install
	$(BIN)/ruff check monitor collectors detectors dashboards tests $(wildcard benchmarks/*.py)

typecheck: install
	$(BIN)/mypy

# The pytest session starts its own broker (deploy/local/kafka.sh with a fresh run dir) and stops it.
test: install system-deps bench-install deploy-tools lint typecheck
	$(KAFKA) fetch
	INFERWATCH_REQUIRE_DEPLOY_TOOLS=1 $(BIN)/pytest $(PYTEST_ARGS)

# On a machine with an NVIDIA GPU (they skip visibly elsewhere): every CUDA and NVML test, then the MMD
# benchmark on the GPU beside alibi-detect on the same device; one summary line at the end.
gpu-check: install bench-install
	@nvidia-smi -L || echo "gpu-check: nvidia-smi found no GPU"
	$(BIN)/pytest -rs -q tests/test_detectors_mmd.py tests/test_gpu.py tests/test_torch_hooks.py \
	  -k "cuda or nvml or gpu"; t=$$?; \
	$(BENCH_VENV)/bin/python benchmarks/w2_mmd.py --device cuda --peer-repeats 1; b=$$?; \
	echo "gpu-check: CUDA/NVML tests exit $$t, GPU benchmark exit $$b"; test $$t -eq 0 && test $$b -eq 0

kafka-up:
	$(KAFKA) start

kafka-down:
	$(KAFKA) stop

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# helm for the deploy tests (tests/test_deploy.py), built once from the Go module proxy into $(DEPLOY_BIN)
# (a few minutes the first time; Go's module and build caches make a rebuild fast). Nothing when present.
DEPLOY_BIN ?= $(HOME)/.cache/inferwatch/bin
HELM_VERSION := v3.22.0
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
deploy-tools:
	@test -x $(DEPLOY_BIN)/helm || { echo "building helm $(HELM_VERSION) into $(DEPLOY_BIN)"; \
	  mkdir -p $(DEPLOY_BIN) && GOBIN=$(DEPLOY_BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@$(DEPLOY_BIN)/helm version --short
