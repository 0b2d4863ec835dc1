# The README's commands. Each does its own set-up on a fresh machine: a virtual environment in
# .venv, torch (the CUDA 13.0 build, so the CUDA kernels compile even without a GPU), and the
# package installed *editable* from this checkout, with the extras the target needs.
#
# Editable install: the source folder vaeiso_ext/ is the package (an edit to a .py file takes
# effect at once), the compiled _C lives in build/editable/, and an import after a change under
# csrc/ rebuilds it (incrementally, with ninja). So `python -m vaeiso_ext ...` works from the
# repository root, where the source folder shadows any other installed copy.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.14.1
BUILD_DEPS := torch==$(TORCH_VERSION) scikit-build-core ninja numpy
EDITABLE_FLAGS := -Ceditable.rebuild=true -Ceditable.verbose=false -Cbuild-dir=build/editable
PYTEST_ARGS ?=

.PHONY: test demo bench install lint format wheel compat clean

$(VENV)/.deps: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(BUILD_DEPS)
	touch $@

# --no-build-isolation: compile against the torch in .venv (an isolated build may pick another).
$(VENV)/.installed: $(VENV)/.deps pyproject.toml CMakeLists.txt
	$(PIP) install -q --no-build-isolation -e ".[test,plot,bench]" $(EDITABLE_FLAGS)
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Lint and format: ruff (configured in pyproject.toml: checks, import order, `ruff format`) for
# the Python, clang-format (.clang-format) for csrc/. `make lint` checks, `make format` rewrites.
# Pinned, so that every machine formats alike; neither needs the build.
LINT_TOOLS := ruff==0.17.6 clang-format==19.1.0
CSRC := $(shell find csrc -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' | sort)

$(VENV)/.lint-tools: Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q $(LINT_TOOLS)
	touch $@

lint: $(VENV)/.lint-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run --Werror $(CSRC)

format: $(VENV)/.lint-tools
	$(VENV)/bin/ruff check --select I --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(CSRC)

demo: install
	$(PY) -m vaeiso_ext reproduce toy --quick --out out/demo

bench: install
	$(PY) -m vaeiso_ext.bench

# The wheel: one file per flavour and platform, for every torch from 2.10 on and every CPython
# from 3.10 on (LibTorch stable ABI, abi3), in dist/. The CPU flavour with VAEISO_CUDA=OFF, the
# CUDA one with VAEISO_CUDA=ON (TORCH_CUDA_ARCH_LIST picks the architectures). Compiled against
# the torch in .venv; install it anywhere with `pip install dist/vaeiso_ext-*.whl`.
wheel: $(VENV)/.deps
	rm -rf dist/vaeiso_ext-*.whl
	$(PIP) wheel -q --no-build-isolation --no-deps -w dist -Cbuild-dir=build/wheel-{wheel_tag} .

# The wheel in dist/ under another torch (default 2.10.0, the lowest the stable ABI admits; e.g.
# `make compat TORCH=2.13.0+cpu`): a fresh venv under build/compat-*/ with that torch and the
# test extras, the same wheel installed, the test suite run there. A download of torch; not part
# of `make test`.
TORCH ?= 2.10.0
compat:
	scripts/compat.sh $(TORCH)

clean:
	rm -rf build dist *.egg-info $(VENV)/.installed
