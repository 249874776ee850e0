# partnerscore — everything a fresh machine needs (Python 3.11, pip, make, git) is installed here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed
# Quiet, offline-friendly defaults for every target. Dependencies are installed with their
# bytecode compiled: where PYTHONDONTWRITEBYTECODE is set (CI images), nothing else writes it and
# every command would recompile mlflow, lightgbm and sklearn (~10 s CPU per command).
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install demo test floor lint format lock browser services clean bench bench-scale

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@# pyspark is an sdist only: each install left another ~1.4 GB build of it in uv's cache
	@# (56 GB after 62 installs on one machine); prune keeps the latest entries (~2 s)
	-$(BIN)/uv cache prune -q
	touch $@

install: $(STAMP)

# Debian's Chromium + ChromeDriver for the report tests (root on CI; skipped if already there).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  { if [ "$$(id -u)" = 0 ]; then \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null); \
	    else echo "note: chromium not installed (needs root: apt-get install chromium chromium-driver)"; fi; }

# Debian's PostgreSQL server (score-history tests start a throwaway one) and a headless Java
# runtime (the Spark engine's tests); root on CI; skipped if already there.
services:
	@{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v java >/dev/null 2>&1; } || \
	  { if [ "$$(id -u)" = 0 ]; then \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql default-jre-headless >/dev/null); \
	    else echo "note: postgresql/java not installed (needs root: apt-get install postgresql default-jre-headless)"; fi; }

demo: install
	$(BIN)/partnerscore demo

# Three pytest-xdist workers: the suite is mostly CPU (LightGBM fits, Spark, Chromium), but
# two workers left CPU time unused (waits: process, JVM and server start-ups, say). On 2 cores,
# the same tree (2,121 tests, 2026-12-07): 2 workers 26:56, 3 workers 23:27 and 23:33,
# 4 workers 25:00 (the CPUs full: vmstat ~99% busy). Each worker builds its own session
# fixtures. A test file runs whole, in order, in one worker (--dist loadfile), as in one process.
# Files are handed out in collection order, the slowest first (tests/conftest.py:
# SLOW_FILES_FIRST); xdist's default order, most tests first, left the few-test Spark files
# (~650 s) for last, one worker running them alone. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 3
test: install browser services
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --ignore=tests/test_dependency_floor.py

# The pyproject lower bounds, checked: every direct dependency at its floor from the package
# index (downloads, so not part of `make test`), then the demo on them (~1 min warm).
floor: install
	PARTNERSCORE_DEPENDENCY_FLOOR=1 $(BIN)/python -m pytest -q -p no:xdist tests/test_dependency_floor.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/bench_simulate.py && $(BIN)/python bench/bench_build.py && $(BIN)/python bench/bench_score.py && $(BIN)/python bench/bench_monitor.py

# Scale benchmark (simulate, validate, build, score, report; pandas vs Spark): see README.
bench-scale: install services
	$(BIN)/python bench/bench_scale.py --sizes 10000,100000

# Re-resolve the lock file after changing pyproject.toml dependencies.
lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra spark --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info
