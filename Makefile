# recsys-stream: everything starts from Python 3.11 and this file.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Pinned BLAS threads: implicit and numpy fight over 2 cores otherwise.
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo up lint test test-unit test-integration bench protos clean test-tools kafka-jars

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

# The explicit-rating peers of benchmarks/explicit.py (Surprise, LensKit 0.14, cornac) in a venv
# of their own: LensKit 0.14 (numba, no torch; 2025.x needs a multi-GB CUDA torch) pins
# numpy 1.26, which must not downgrade the project's own venv.
PEERS_VENV := .venv-peers
$(PEERS_VENV)/.installed: benchmarks/explicit-peers.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r benchmarks/explicit-peers.txt
	touch $@

## make demo: the whole system on the embedded broker, with generated events; exits cleanly.
demo: $(VENV)/.installed
	$(VENV)/bin/recsys-stream demo

## make up: the same stack, kept running until Ctrl-C.
up: $(VENV)/.installed
	$(VENV)/bin/recsys-stream demo --keep-running

# Tools the tests run for real, from Debian's packages: Prometheus scrapes the services in
# tests/integration/test_operations.py; kcat is the hand-made producer of
# tests/integration/test_kcat.py. Installed when missing and we may (root + apt).
TEST_TOOLS := prometheus kcat
test-tools:
	@missing=""; for t in $(TEST_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's$$missing for the tests"; \
	    apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "missing for the tests:$$missing (Debian: apt-get install$$missing)"; fi; fi
	@# a Java 17+ for the Spark engine's tests (PySpark's jars run on it); JAVA_HOME wins
	@[ -n "$$JAVA_HOME" ] || command -v java >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's OpenJDK 17 for the Spark engine tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless >/dev/null; \
	  else echo "java is missing: install a Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"; fi; }
	@# a native BLAS for Spark MLlib (netlib loads the system's libblas.so.3 / liblapack.so.3;
	@# without one it falls back to Java BLAS): Spark ALS at scale 0.05 took 129 s on Java BLAS,
	@# 101 s on Debian's OpenBLAS (issue 32). numpy and implicit bundle their own.
	@[ -e /usr/lib/x86_64-linux-gnu/libblas.so.3 ] || [ -e /usr/lib/aarch64-linux-gnu/libblas.so.3 ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's OpenBLAS as the system BLAS for Spark MLlib"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends libopenblas0-pthread >/dev/null; } \
	    || echo "could not install OpenBLAS: Spark MLlib runs on Java BLAS (slower, same results)"; \
	  else echo "no system BLAS: Spark MLlib runs on Java BLAS (Debian: apt-get install libopenblas0-pthread)"; fi; }

# Apache Kafka for the tests (and `recsys-stream broker --kafka`): its jars from Maven Central
# (kafka/pom.xml, pinned, checksums checked) into .cache/kafka-<version>/, once. Java 17+ and
# Maven must be there; without them this fails with one line saying which is missing.
kafka-jars: $(VENV)/.installed
	@command -v java >/dev/null || [ -x "$$JAVA_HOME/bin/java" ] || { \
	  echo "make test needs Java 17+ for the Apache Kafka broker: set JAVA_HOME or install OpenJDK 17 (Debian: apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { \
	  echo "make test needs Maven to fetch Apache Kafka from Maven Central: install it (Debian: apt-get install maven)"; exit 1; }
	@$(PY) -m recsys_stream.kafka_cluster fetch

## make lint: pyflakes' rules over the code, tests and benchmarks (an undefined name fails here).
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check recsys_stream tests benchmarks

## make test: the linter, then unit and integration tests (the integration tests start Apache Kafka themselves).
test: lint test-tools kafka-jars
	$(PY) -m pytest -q -ra

test-unit: $(VENV)/.installed-dev
	$(PY) -m pytest -q -ra tests/unit

test-integration: $(VENV)/.installed-dev kafka-jars
	$(PY) -m pytest -q -ra tests/integration

## make bench: install the benchmark extras (faust-streaming, psutil); run scripts in benchmarks/.
bench: $(VENV)/.installed-bench $(PEERS_VENV)/.installed
	@ls benchmarks/*.py

## make protos: regenerate the protobuf / gRPC stubs after editing proto/.
protos: $(VENV)/.installed-dev
	$(PY) -m recsys_stream.contracts.codegen

clean:
	rm -rf $(VENV) $(PEERS_VENV) var .pytest_cache .cache
