# Two commands for a fresh machine:  make run  (start the service)  and  make test  (run the tests).
# Both create .venv/ with the pinned dependencies on first use (Python 3.11 needed).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 0.0.0.0
PORT   ?= 8000

.PHONY: install run test train analyze bench-accuracy bench-serving bench-vad bench-load bench-scoring constraints clean

$(BIN)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required: make PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,dev,cluster]'
	@touch $@

install: $(BIN)/.installed

run: install
	SER_HOST=$${SER_HOST:-$(HOST)} SER_PORT=$${SER_PORT:-$(PORT)} $(BIN)/python -m app

test: install
	$(BIN)/python -m pytest

train: install
	$(BIN)/python -m training train $(ARGS)

analyze: install
	$(BIN)/python -m training analyze $(ARGS)

bench-accuracy: install
	$(BIN)/python benchmarks/accuracy.py $(ARGS)

bench-serving: install
	$(BIN)/python benchmarks/serving.py $(ARGS)

bench-vad: install
	$(BIN)/python benchmarks/vad.py $(ARGS)

bench-load: install
	$(BIN)/python benchmarks/load.py $(ARGS)

bench-scoring: install
	$(BIN)/python benchmarks/scoring.py $(ARGS)

constraints: install
	( head -2 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable ) > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
