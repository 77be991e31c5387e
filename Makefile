# Set-up and entry points. Each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned for reproducible installs; pyproject.toml keeps looser ranges for users.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# The checkers, pinned so that a new release cannot turn the test command red on its own.
CHECK_PINS := ruff==0.17.6 mypy==2.4.1 scipy-stubs==1.17.1.5 types-tqdm==4.70.0.20261106 \
	types-pycocotools==2.0.0.20261021 mkdocs==1.6.1 mkdocs-material==9.8.2 mkdocstrings==1.0.8 \
	mkdocstrings-python==2.0.11 pytest-xdist==3.8.0

.PHONY: demo test lint typecheck docs bench clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[test,viewer,docs]' $(TORCH_PINS) $(CHECK_PINS)
	# Quantus without its opencv-python, which would overwrite opencv-python-headless's cv2
	$(BIN)/pip install --quiet --no-deps quantus==0.6.0 cachetools
	touch $@

demo: $(BIN)/.installed
	$(BIN)/dcsm explain src/dcsm/data/chelsea_coffee.png --out out/demo --per-layer
	@echo "maps and figures written to out/demo/chelsea_coffee/"

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks docs

# The documentation site (mkdocs.yml, docs/) into build/site/; --strict: a broken link, a missing
# page or an API reference that does not resolve fails the build, and with it `make test`.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# mypy reads its settings from pyproject.toml ([tool.mypy]); its cache makes a re-run take seconds.
typecheck: $(BIN)/.installed
	$(BIN)/mypy

# The suite on PYTEST_WORKERS processes (pytest-xdist); the tests that start processes of their
# own share one of them (tests/conftest.py, MULTI_PROCESS). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
test: $(BIN)/.installed lint typecheck
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_batched.py

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info .mypy_cache
