# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test unit lint bench clean tools

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/revpulse demo

# The tests use real tools from Debian: prometheus + promtool, amtool, docker-compose (config checks only),
# stunnel4 and openssl (Kafka over TLS: a CA and certificates made in the test, TLS terminated in front of the broker),
# chromium and its chromedriver (the board, in a real headless browser through Selenium).
DEBIAN_TOOLS := prometheus:promtool prometheus-alertmanager:amtool docker-compose:docker-compose stunnel4:stunnel4 openssl:openssl \
	chromium:chromium chromium-driver:chromedriver
tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
		command -v "$${pair#*:}" >/dev/null || missing="$$missing $${pair%%:*}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "make test needs:$$missing (sudo apt-get install$$missing)" >&2; exit 1; fi; fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Everything, as CI runs it: lint, the layout and unit tests, and the integration tests (broker, worker
# processes, Prometheus, promtool, amtool).
test: setup tools lint
	$(BIN)/pytest -q

# The inner loop: unit tests only (no broker, no processes), well under a minute.
unit: setup
	$(BIN)/pytest -q tests/unit

bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
