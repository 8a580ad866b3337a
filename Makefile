# edgedeploy — developer and CI entry points. `make demo` and `make test` work on a fresh machine
# with nothing but Python 3.10+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out
ED     := $(BIN)/edgedeploy

.PHONY: install demo test test-fast bench lint sshd clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e ".[dev]"
	@touch $(STAMP)

# The SSH integration tests talk to a real OpenSSH sshd started by a fixture.
sshd:
	@if ! command -v sshd >/dev/null 2>&1 && ! test -x /usr/sbin/sshd; then \
	  echo "installing openssh-server (for the SSH integration tests)"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server >/dev/null; \
	fi

# Four test processes (pytest-xdist), each taking the next test when it is free: most tests wait
# on processes, sockets and sshd, so two left a 2-core machine a quarter idle (910 s of CPU in
# 592 s; three: 523 s; on a slower hour three took 570-590 s and four 510 s); the few that need
# the cores to themselves (marker `serial`) run after.
# Python's bytecode cache kept under the venv, also where the caller's shell turned it off
# (PYTHONDONTWRITEBYTECODE): without it every test process, and every worker process a test
# starts, compiles what it imports again (collecting the tests took 12 s of CPU a process, 3.5 s
# with it), and no __pycache__ lands beside the sources a bundle copies. So `install` does not
# compile the packages it installs (Python would look for their bytecode there, not under the
# venv; compiling them took 17 of a fresh install's 48 s), and the demo and the benches use it too.
test test-fast demo bench: export PYTHONDONTWRITEBYTECODE :=
test test-fast demo bench: export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
test: install sshd
	$(BIN)/ruff check toolchain tests
	$(BIN)/python -m pytest -q -n 4 --dist worksteal -m "not serial" --ignore=tests/bench tests
	$(BIN)/python -m pytest -q -m serial --ignore=tests/bench tests

test-fast: install
	$(BIN)/python -m pytest -q -x -n 2 -m "not slow and not serial" --ignore=tests/bench tests

# The main job end to end on this host: zoo model -> plan (measured here; the Jetson's from the
# cost model, as no board is reached from a demo) -> build -> push (local directory
# transport) -> health check -> three images through the deployed runner (its Unix socket, the
# manifest's io.preprocess) -> stop -> measured throughput beside onnxruntime's (the runner is
# stopped first so it does not compete with the benchmark for the cores).
demo: install
	@mkdir -p $(DEMO)
	$(ED) targets list
	$(ED) zoo export mobilenet_v2 -o $(DEMO)/mobilenet_v2.onnx
	$(ED) inspect $(DEMO)/mobilenet_v2.onnx
	$(ED) validate plans/demo.yaml
	$(ED) plan plans/demo.yaml --target local
	$(ED) plan plans/demo.yaml --target jetson --no-measure
	$(ED) push -m plans/demo.yaml --target local
	$(ED) status -m plans/demo.yaml --target local
	$(ED) infer -m plans/demo.yaml --target local plans/frames
	$(ED) stop -m plans/demo.yaml --target local
	$(ED) bench plans/demo.yaml --target local --frames 200

bench: install
	$(BIN)/python -m pytest -q tests/bench -p no:cacheprovider -s

lint: install
	$(BIN)/ruff check toolchain tests

clean:
	rm -rf $(VENV) $(DEMO) build dist .pytest_cache .ruff_cache
