# edgedeploy — developer and CI entry points. `make demo` and `make test` work on a fresh machine
# with nothing but Python 3.10+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

.PHONY: install demo test test-fast bench lint sshd clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

# The SSH integration tests talk to a real OpenSSH sshd started by a fixture.
sshd:
	@if ! command -v sshd >/dev/null 2>&1 && ! test -x /usr/sbin/sshd; then \
	  echo "installing openssh-server (for the SSH integration tests)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server >/dev/null; \
	fi

test: install sshd
	$(BIN)/python -m pytest -q --ignore=tests/bench tests

test-fast: install
	$(BIN)/python -m pytest -q -x -m "not slow" --ignore=tests/bench tests

demo: install
	@mkdir -p $(DEMO)
	$(BIN)/edgedeploy targets list
	$(BIN)/edgedeploy zoo export mobilenet_v2 -o $(DEMO)/mobilenet_v2.onnx
	$(BIN)/edgedeploy inspect $(DEMO)/mobilenet_v2.onnx
	$(BIN)/edgedeploy validate plans/demo.yaml

bench: install
	$(BIN)/python -m pytest -q tests/bench -p no:cacheprovider -s

lint: install
	$(BIN)/ruff check toolchain tests

clean:
	rm -rf $(VENV) $(DEMO) build dist .pytest_cache .ruff_cache
