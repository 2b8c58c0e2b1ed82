# Two set-up commands, both working on a fresh Debian machine as root:
#   make demo   install what is missing, build the kernels, fit a bundled example, print its summary
#   make test   the same install, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# CHOLMOD and its BLAS: Debian's SuiteSparse 5.12, and OpenBLAS instead of the reference BLAS
SYSTEM_PACKAGES := libsuitesparse-dev libopenblas0-pthread

.PHONY: demo test lint bench system install clean package-check

demo: install
	$(PY) -m lmmfast

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check lmmfast tests setup.py $(wildcard bench)
	$(VENV)/bin/ruff format --check lmmfast tests setup.py $(wildcard bench)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/cython-lint src

# the sdist, a wheel built from it, installed into a fresh venv outside the checkout, the demo
package-check: install
	PY="$(CURDIR)/$(PY)" .ci/package-check

# the peers run on the same machine: lme4 (R) and mixedlm, statsmodels from PyPI
BENCH_PACKAGES := r-base-core r-cran-lme4 r-cran-jsonlite

bench: install
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi
	$(PY) -m pip install -q mixedlm statsmodels pyarrow
	$(PY) bench/run.py $(BENCH_ARGS)

system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages: $$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

install: system $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py $(wildcard src/*.pyx)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=64" wheel "Cython>=3.0" "numpy>=1.25"
	$(PY) -m pip install -q "scikit-sparse>=0.4.12,<0.5"
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

clean:
	rm -rf build $(VENV) lmmfast/*.so src/*.c *.egg-info
