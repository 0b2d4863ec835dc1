# The README's commands. Each does its own set-up on a fresh machine: a virtual environment in
# .venv, torch (the CUDA 13.0 build, so the CUDA kernels compile even without a GPU), the
# package built against it, and the extras the target needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.14.1
BUILD_DEPS := torch==$(TORCH_VERSION) scikit-build-core ninja numpy
PYTEST_ARGS ?=

.PHONY: test demo bench install clean

$(VENV)/.deps: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(BUILD_DEPS)
	touch $@

# --no-build-isolation: compile against the torch in .venv (an isolated build may pick another).
install: $(VENV)/.deps
	$(PIP) install -q --no-build-isolation ".[test,plot]"

test: install
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

demo: install
	$(PY) -m vaeiso_ext reproduce toy --quick --out out/demo

bench: $(VENV)/.deps
	$(PIP) install -q --no-build-isolation ".[bench]"
	$(PY) -m vaeiso_ext.bench

clean:
	rm -rf build dist *.egg-info
