# Mailyard: `make run` starts the platform, `make test` checks it, `make bench` measures it.
# the distribution's optimised CPython when it has one (scripts/python.sh says why)
PYTHON ?= $(shell scripts/python.sh)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
MEMBERS := packages/api packages/core packages/cli \
           services/smtp-ingress services/queue services/remote-delivery \
           services/local-delivery services/relay-auth services/directory \
           services/mail-access
# Test support (the pytest plugin, test rigs): installed for make test / make bench only,
# never into an image (the Dockerfile installs MEMBERS).
DEV_MEMBERS := packages/testing
PYPROJECTS := $(foreach m,$(MEMBERS) $(DEV_MEMBERS),$(m)/pyproject.toml)
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck proto proto-check pytest bench clean image test-containers

$(STAMP): $(PYPROJECTS) requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt \
		$(foreach m,$(MEMBERS) $(DEV_MEMBERS),-e $(m))
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/mailyard up

proto: install
	$(BIN)/python scripts/gen_proto.py

proto-check: install
	$(BIN)/python scripts/gen_proto.py --check

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -n 2 --timeout 180 $(PYTEST_ARGS)

test: proto-check lint typecheck pytest

# Mailyard's image (and NATS's, where no registry can be reached) with podman; see scripts/image.sh.
image:
	scripts/image.sh

# The platform from its images, end to end (docker-compose.yml under podman-compose).
test-containers: install image
	MAILYARD_CONTAINER_TESTS=1 $(BIN)/pytest -p no:cacheprovider -n 0 --timeout 1800 tests/containers

bench: install
	$(BIN)/python -m bench.field
	$(BIN)/python -m bench.sessions
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var .bench .mypy_cache .ruff_cache .pytest_cache .images.env
