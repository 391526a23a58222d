# Two commands are the whole set-up: `make run` and `make test`. Both create the virtualenv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run partner test containers-test fuzz browser wrk asyncapi-tools contracts release bench bench-idle bench-apply install clean lint

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m devstack.run

# One more partner company beside a running `make run` (SPEC section 10), e.g.
#   make partner ROLE=insourcing ID=globex NAME="Globex" PORT=8012 [TOKEN=...]
partner: $(STAMP)
	$(PY) -m devstack.partner --role "$(ROLE)" --id "$(ID)" --name "$(NAME)" --port "$(PORT)" --token "$(TOKEN)"

# The whole suite on the broker of record (Apache Kafka where a JDK and Maven are), then the
# broker-facing tests again on Tansu, the fallback, then deploy/ run for real in containers; the last
# lines say what ran where.
test: $(STAMP) browser asyncapi-tools
	@mkdir -p var/test-logs && rm -f var/test-logs/summary.txt
	@$(PY) -m pytest --ignore=tests/containers $(PYTEST_ARGS); full=$$?; \
	TEST_BROKER=tansu $(PY) -m pytest -m broker --ignore=tests/containers $(PYTEST_ARGS); fallback=$$?; \
	$(MAKE) --no-print-directory containers-test; containers=$$?; \
	echo; echo "make test: the whole suite, the broker-facing tests (-m broker) on Tansu, then the container tests:"; \
	cat var/test-logs/summary.txt; exit $$(( full || fallback || containers ))

# deploy/ built and run on this checkout's own Docker engine (var/docker/docker.sock; started here, as
# root installing Debian's docker.io if missing, and stopped after): no engine is a failure, not a skip.
containers-test: $(STAMP)
	@$(PY) -m pytest tests/containers $(PYTEST_ARGS); status=$$?; \
	$(PY) -m devstack.containers stop; exit $$status

# The fuzzing that `make test` runs, longer: FUZZ_EXAMPLES cases per operation and phase (default
# here 100, in `make test` 3), FUZZ_SEED to vary the inputs; reports in var/test-logs/fuzz-*.txt.
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} $(PY) -m pytest tests/fuzz $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium (Playwright's own download is not reachable here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the browser tests need Chromium at /usr/bin/chromium: install the 'chromium' package"; exit 1; fi; }

# The AsyncAPI project's own parser (tools/asyncapi), installed by `npm ci` from its lock file; needs Node.js and npm.
asyncapi-tools: $(STAMP)
	$(PY) -m devstack.asyncapi --install

# docs/asyncapi.yaml written again from shared/contracts (commit it with the change that moved it), and
# today's contracts checked against the last release's (SPEC section 11); `make test` does both too.
contracts: $(STAMP)
	$(PY) -m services.sync_bridge.asyncapi
	$(PY) -m shared.contracts.compat

# Cut a release: `make release VERSION=1.1.0` (docs/architecture.md, "Releases").
release: $(STAMP)
	$(PY) -m devstack.release "$(VERSION)"

# The bench's load generator (tests/load): Debian's wrk, installed here as root when missing.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's wrk, the bench's load generator"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "make bench writes its load with wrk: install the 'wrk' package"; exit 1; fi; }

bench: $(STAMP) wrk
	$(PY) -m tests.bench
	$(PY) -m tests.bench_idle
	$(PY) -m tests.bench_cluster

bench-idle: $(STAMP)
	$(PY) -m tests.bench_idle

bench-apply: $(STAMP)
	$(PY) -m tests.bench_apply

clean:
	rm -rf var .pytest_cache
