# recsys-stream: everything starts from Python 3.11 and this file.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Pinned BLAS threads: implicit and numpy fight over 2 cores otherwise.
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo up test test-unit test-integration bench protos clean test-tools

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install when the project's dependencies change.
$(VENV)/.installed: pyproject.toml $(VENV)/bin/activate
	$(PIP) install --quiet -e .
	touch $@

# the tests run the Spark engine too (tests/integration/test_spark_engine.py): dev + spark
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev,spark]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-dev
	$(PIP) install --quiet -e '.[dev,spark,bench]'
	touch $@

## make demo: the whole system on the embedded broker, with generated events; exits cleanly.
demo: $(VENV)/.installed
	$(VENV)/bin/recsys-stream demo

## make up: the same stack, kept running until Ctrl-C.
up: $(VENV)/.installed
	$(VENV)/bin/recsys-stream demo --keep-running

# Tools the tests run for real: Prometheus (Debian's package) scrapes the services in
# tests/integration/test_operations.py. Installed when missing and we may (root + apt).
test-tools:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's prometheus for the operations test"; \
	    apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "prometheus is missing: install it (Debian: apt-get install prometheus)"; fi; }
	@# a Java 17+ for the Spark engine's tests (PySpark's jars run on it); JAVA_HOME wins
	@[ -n "$$JAVA_HOME" ] || command -v java >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's OpenJDK 17 for the Spark engine tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null; \
	  else echo "java is missing: install a Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"; fi; }

## make test: unit and integration tests (the integration tests start their own broker).
test: $(VENV)/.installed-dev test-tools
	$(PY) -m pytest -q -ra

test-unit: $(VENV)/.installed-dev
	$(PY) -m pytest -q -ra tests/unit

test-integration: $(VENV)/.installed-dev
	$(PY) -m pytest -q -ra tests/integration

## make bench: install the benchmark extras (faust-streaming, psutil); run scripts in benchmarks/.
bench: $(VENV)/.installed-bench
	@ls benchmarks/*.py

## make protos: regenerate the protobuf / gRPC stubs after editing proto/.
protos: $(VENV)/.installed-dev
	$(PY) -m recsys_stream.contracts.codegen

clean:
	rm -rf $(VENV) var .pytest_cache
