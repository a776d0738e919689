# Each target sets up .venv on first use, so a fresh machine needs one command.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The [libvirt] extra builds against libvirt-dev: included where pkg-config finds it.
EXTRAS := dev$(shell pkg-config --exists libvirt 2>/dev/null && echo ,libvirt)
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: demo test lint typecheck pytest bench reference libvirt-recording fuzz stress clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/qmpevents demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Differential fuzzing against the installed QEMU, long: several seeds, thousands of inputs.
fuzz: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m tests.qemu.fuzz $(FUZZ_ARGS)

# The server under random input, slowloris, non-readers and churn, ten times CI's run.
stress: $(STAMP)
	$(BIN)/python -m tests.server.stress $(STRESS_ARGS)

# Re-record tests/data/qemu-7.2 from the installed QEMU (see tests/data/README.md).
reference: $(STAMP)
	$(BIN)/python tools/record_reference.py $(NAMES)

# Re-record what libvirt asks QEMU (its capability probe, a domain start) into the
# simulator's src/qmpevents/sim/data; needs root and libvirtd (see tests/data/README.md).
libvirt-recording: $(STAMP)
	$(BIN)/python tools/record_libvirt.py --qemu /usr/bin/qemu-system-x86_64
	$(BIN)/python tools/record_libvirt.py --qemu /usr/bin/qemu-system-ppc64

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
