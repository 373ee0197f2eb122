# MSDT: one virtual environment built from this project's own files.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= build/demo
export VTK_DEFAULT_OPENGL_WINDOW ?= vtkEGLRenderWindow
export QT_QPA_PLATFORM ?= offscreen

.PHONY: venv demo test bench lint clean

$(BIN)/msdt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(BIN)/msdt

venv: $(BIN)/msdt

demo: venv
	$(BIN)/msdt demo --out $(OUT) > /dev/null
	@echo "Summary: $(OUT)/summary.json"
	@echo "Report:  $(abspath $(OUT))/report.html (anatomy), $(abspath $(OUT))/spine/report.html (spine)"

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	PYTHONWARNINGS=ignore $(BIN)/python Testing/Python/bench.py

lint: venv
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build .pytest_cache
