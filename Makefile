# Two commands do all the set-up on a fresh machine:
#   make demo   -> demo corpus (piper voice) -> features -> train configs/tiny.yaml, then configs/tiny_critic.yaml
#                  (a mel critic) -> synth demo/hello.wav
#   make test   -> lint (ruff, the import layering) + the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo
DEMO_SENTENCES ?= 600
DEMO_ARGS ?=

.PHONY: demo test lint bench clean-demo chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: this version is a CPU build on local disk; others pull CUDA builds.
	$(BIN)/pip install --quiet torch==2.13.0

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[demo,eval,test]"
	# The DistillMOS scorer's weights, outside the eval extra: distillmos requires torchaudio, whose
	# wheels pin torch builds that pull gigabytes of CUDA libraries. voxtrain never imports it, it
	# only reads its weights file, so it goes in without its dependencies.
	$(BIN)/pip install --quiet --no-deps distillmos==0.9.1
	touch $@

$(DEMO)/corpus/metadata.csv: | $(VENV)/.installed
	$(BIN)/voxtrain make-corpus $(DEMO)/corpus --voice piper --sentences $(DEMO_SENTENCES)

$(DEMO)/features/COMPLETE: $(DEMO)/corpus/metadata.csv
	$(BIN)/voxtrain prepare $(DEMO)/corpus --out $(DEMO)/features --config configs/tiny.yaml

# Two stages: the voice (configs/tiny.yaml), then 400 steps against a mel critic, which the
# listening scores measured more natural (docs/NATURALNESS.md). The finished voice is $(VOICE).
VOICE  := $(DEMO)/runs/tiny_critic/checkpoints/best.safetensors

demo: $(VENV)/.installed $(DEMO)/features/COMPLETE
	$(BIN)/voxtrain train --features $(DEMO)/features --run $(DEMO)/runs/tiny --config configs/tiny.yaml --yes $(DEMO_ARGS)
	$(BIN)/voxtrain train --init-from $(DEMO)/runs/tiny/checkpoints/best.safetensors --features $(DEMO)/features \
		--run $(DEMO)/runs/tiny_critic --config configs/tiny_critic.yaml --yes
	$(BIN)/voxtrain synth --checkpoint $(VOICE) \
		--text "Hello! This voice was trained by voxtrain on two CPU cores." --out $(DEMO)/hello.wav

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench tools
	$(BIN)/python tools/check_layers.py src/voxtrain

# Headless Chromium for the report page's browser test (tests/test_report.py skips without it).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then echo "no chromium and no apt-get: the browser test of tests/test_report.py will skip"; \
	  elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium missing and no root/sudo: the browser test of tests/test_report.py will skip (apt-get install chromium)"; fi; }

# Two pytest workers, each test file on one (its module fixtures are built once): the tests
# are mostly single-threaded subprocesses, so two cores run two files at a time.
TEST_WORKERS ?= 2

test: lint chromium
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

clean-demo:
	rm -rf $(DEMO)
