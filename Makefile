# Two commands do everything on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# CIFAR-10 in ImageFolder layout, read in place; override with TOOLCHAIN_CIFAR10=/path/to/cifar10(.tar.gz).
TOOLCHAIN_CIFAR10 ?= $(abspath ../shared/datasets/cifar10-jpeg.tar.gz)
export TOOLCHAIN_CIFAR10

.PHONY: setup test test-fast lint adb demo profile zoo clean
SOURCES := toolchain android_bench tests benchmarks

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: setup adb lint
	$(BIN)/python -m pytest -q -rs

# Skips the end-to-end tests marked slow; `make test` is the full suite.
test-fast: setup lint
	$(BIN)/python -m pytest -q -rs -m 'not slow'

lint: setup
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

# Debian's stock adb client, which the ADB tests check the loopback test device against: installed when this runs
# as root on Debian; otherwise that one test is skipped and says how to install it.
adb:
	@command -v adb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq adb >/dev/null) ; } || \
	  echo "note: no stock adb client (sudo apt-get install -y adb); its ADB test will be skipped"

# The main job on a built-in default: AMC search for resnet20 under half its host latency, one fine-tuning
# epoch, export to .tflite (checked against PyTorch), the file's latency measured on this CPU, and a report.
# The search spends its whole budget, so timing noise alone can measure the file a little over it: then the
# search runs again under a budget tightened by measured/predicted (--enforce-measured).
demo: setup
	rm -rf runs/demo
	$(BIN)/toolchain compress --model resnet20 --data cifar10 --device host --latency-ratio 0.5 \
	  --episodes 60 --warmup-episodes 20 --finetune-epochs 1 --enforce-measured --out runs/demo

# Build or extend the latency table of a target: make profile DEVICE=host MODEL=resnet56. Phones: DEVICE=pixel
# (the phone from $$ANDROID_SERIAL or the only one attached); PROFILE_ARGS passes more options, e.g.
# PROFILE_ARGS="--serial A --serial B" to profile two phones in parallel, one table each.
DEVICE ?= host
MODEL ?= resnet20
PROFILE_ARGS ?=
profile: setup
	$(BIN)/toolchain profile --device $(DEVICE) --model $(MODEL) $(PROFILE_ARGS)

# Retrain the committed zoo checkpoints with the recipe reported in README, which gives each model's epochs and
# time on 2 CPU cores; EPOCHS=... changes the schedule.
ZOO_MODELS ?= resnet20 plain20 resnet56 mobilenet_v2_cifar
EPOCHS ?= 30
zoo: setup
	for m in $(ZOO_MODELS); do \
	  $(BIN)/toolchain train --model $$m --data cifar10 --epochs $(EPOCHS) --out runs/zoo/$$m.pt && \
	  cp runs/zoo/$$m.pt toolchain/models/checkpoints/$$m.pt || exit 1; \
	done

clean:
	rm -rf $(VENV) runs build *.egg-info
