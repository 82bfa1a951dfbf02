# The README's commands. `make demo` and `make test` each install what they need on a fresh clone.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STATIC  := src/celery_flow/web/static/index.html
FRONT_SRC := $(shell find frontend/src frontend/index.html frontend/package.json frontend/package-lock.json frontend/vite.config.ts frontend/tsconfig.json -type f 2>/dev/null)

.PHONY: install ui demo test test-unit test-integration test-e2e lint docs bench clean

install: $(VENV)/.stamp-install $(STATIC)

$(VENV)/.stamp-install: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

ui: $(STATIC)

$(STATIC): $(FRONT_SRC)
	@if [ -f frontend/package.json ]; then \
	  cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run build; \
	else echo "frontend/ not present yet: skipping UI build"; fi

demo: install
	$(BIN)/celery-flow demo

test: install
	bash .ci/services.sh
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

test-unit: install
	$(BIN)/python -m pytest tests/unit -q

test-integration: install
	$(BIN)/python -m pytest tests/integration -q

test-e2e: install
	$(BIN)/python -m pytest tests/e2e -q

# The UI's packages (the UI build installs them too; a checkout whose UI is already built may lack them).
NODE_MODULES := frontend/node_modules/.package-lock.json

$(NODE_MODULES): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The UI half: ESLint, tsc, and generated API types matching the server's OpenAPI schema.
lint: install $(NODE_MODULES)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd frontend && npm run lint && npm run typecheck && npm run check-types

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or anchor.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) dist build frontend/node_modules src/celery_flow/web/static/assets src/celery_flow/web/static/index.html
