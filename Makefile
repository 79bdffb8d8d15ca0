# axcell: two commands on a fresh Debian machine with Python 3.11 —
#   make demo   set up and run the packaging cell in simulation
#   make test   set up and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

PKI    := build/opcua-pki

.PHONY: setup python-deps ros certs test-system demo test bench clean

setup: python-deps ros certs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Python dependencies (editable install, re-run when pyproject.toml changes)
python-deps: $(VENV)/.deps-stamp
$(VENV)/.deps-stamp: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Real ROS 2 Jazzy from PyPI plus the project's interface package (cached, idempotent)
ros: python-deps
	$(PY) -m cell.ros.setup_ros --venv $(VENV) --quiet

# OPC UA certificates (Basic256Sha256) for the northbound server and secured machine links; kept if present
certs: python-deps
	$(PY) -m drivers.opcua_certs $(PKI)

# System packages for the browser test (Debian's chromium); skipped when present
test-system:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the HMI browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(BIN)/axcell run launch/packaging_cell.yaml --duration 600 --seed 1 --speed max --report build/demo-report.json

test: setup test-system
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf build runs .pytest_cache
