# musecl: `make test` runs the tests, `make book` executes every chapter and renders the book.
# Everything lives in .venv/ (pinned by requirements.txt) and build/ (generated, git-ignored).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= build
# extra arguments for `musecl book`, e.g. make book BOOK_ARGS="--city path/to/city --force"
BOOK_ARGS ?=
# run settings every chapter reads (RunConfig keys); params/smoke.yaml for a quick look
PARAMS ?= params/ci.yaml

MATHJAX_VERSION := 3.2.2
MATHJAX_DIR     := book/_static_mathjax/mathjax
MATHJAX_STAMP   := $(MATHJAX_DIR)/.version-$(MATHJAX_VERSION)

.PHONY: venv test book check-book readme mathjax clean

# The venv is reused while its stamp is newer than the pinned requirements and pyproject.toml.
venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

test: venv
	$(BIN)/pytest -q -m "not book"

# MathJax is served from the book itself so that math renders offline (see _config.yml).
mathjax: $(MATHJAX_STAMP)
$(MATHJAX_STAMP):
	npm install --prefix $(OUT)/npm --no-audit --no-fund --loglevel=error mathjax@$(MATHJAX_VERSION)
	rm -rf $(MATHJAX_DIR)
	mkdir -p $(dir $(MATHJAX_DIR))
	cp -r $(OUT)/npm/node_modules/mathjax/es5 $(MATHJAX_DIR)
	touch $@

book: venv mathjax
	$(BIN)/musecl book --out $(OUT) --params $(PARAMS) $(BOOK_ARGS)

# the README's results at a glance (table + docs/at_a_glance.png), from the last `make book`
readme: venv
	$(BIN)/musecl readme --build $(OUT)

check-book: venv
	$(BIN)/pytest -q -m book

clean:
	rm -rf $(OUT) book/_static_mathjax .pytest_cache
