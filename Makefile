# The two commands of the README:
#   make run    set up and serve the chat on $(HOST):$(PORT)
#   make test   set up and run every test, on both stacks
# Both create .venv and install the locked dependencies on first use:
# requirements.txt (runtime) and requirements-dev.txt (tests, lint, bench),
# every package pinned with its hashes. `make lock` re-locks after an edit of
# a requirements*.in file; `make upgrade` moves every pin to the newest
# release, a change to test like any other.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 2000
# Extra daphne flags. daphne runs with -v 0: no access log line per request
# (load balancers probe /readyz every second; nginx logs access), and what
# the chat logs follows LOG_FORMAT; `--access-log -` brings it back. Behind a reverse proxy set TRUSTED_PROXIES instead of
# daphne's --proxy-headers, which believes anyone's X-Forwarded-For
# (docs/deploy.md).
DAPHNE_ARGS ?=
# daphne pings a WebSocket silent for 35 s and drops it when no pong comes
# in 15 s: a dead client stops counting as online within the protocol's
# minute (35 + daphne's 2 s check + 15 < 60), and an idle connection costs
# a ping and a pong every 35 s, the larger part of an idle process's CPU
# (docs/performance.md, item 3). tests/test_bench.py holds every copy of
# these flags (deploy/chat@.service, bench/stack.py) to that sum.
PINGS := --ping-interval 35 --ping-timeout 15
# `make cluster N=3` starts N processes on PORT, PORT+1, ...
N ?= 2

# The scale-out half of the suite runs against these (started before the
# session on dev and CI machines; see README).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL    ?= redis://127.0.0.1:6379/0
# The ports the tests' servers listen on, a range for each half (they run
# at once): below the kernel's range for outgoing connections (32768 on),
# so neither half's server, nor a client's socket, takes the other's.
TEST_PORTS_SQLITE   ?= 30000-31399
TEST_PORTS_SCALEOUT ?= 31400-32767
PYTEST_ARGS ?=
# Workers per half (pytest-xdist; a test file stays on one worker). The
# suite mostly waits on the servers, browsers and clients it starts: two
# halves of two workers each keep both cores of a small machine busy.
TEST_WORKERS ?= 2
# Branch coverage floors (percent) for `make test`, a point or two under the
# figures in docs/quality.md: the run fails below either.
COV_FLOOR_MESSAGING ?= 87
COV_FLOOR_ACCOUNTS  ?= 95

LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes

.PHONY: run cluster test test-sqlite test-scaleout coverage mutation lint format install install-dev lock upgrade browser nginx clean format-js lint-js

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# Re-lock after editing requirements.in or requirements-dev.in; pins that
# still satisfy the .in files stay as they are.
lock: install-dev
	$(LOCK) requirements.in -o requirements.txt
	$(LOCK) requirements-dev.in -o requirements-dev.txt

# The deliberate upgrade: every pin to its newest release. Run `make test`
# and commit the two lock files with what changed.
upgrade: install-dev
	$(LOCK) --upgrade requirements.in -o requirements.txt
	$(LOCK) --upgrade requirements-dev.in -o requirements-dev.txt

# chat_migrate: migrate under a lock, so processes started at once (the
# README's scale-out snippet, `make cluster` beside a `make run`) migrate
# one after the other instead of together.
run: install
	$(BIN)/python manage.py chat_migrate
	@# Where attachments are kept on this disk (MEDIA_ROOT, var/media by default).
	mkdir -p "$${MEDIA_ROOT:-$${CHAT_VAR_DIR:-var}/media}"
	$(BIN)/python manage.py chat_presence --prune
	@# Served beyond this machine (HOST=0.0.0.0) with no ALLOWED_HOSTS given,
	@# accept any Host name so the LAN address works; the WebSocket origin
	@# check still refuses other sites' pages.
	@if [ -z "$$ALLOWED_HOSTS" ] && [ "$(HOST)" != 127.0.0.1 ] && [ "$(HOST)" != localhost ]; then \
	  export ALLOWED_HOSTS='*'; echo "Accepting any Host name; set ALLOWED_HOSTS to restrict."; fi; \
	ulimit -n "$$(ulimit -Hn)" 2>/dev/null || true; \
	echo "Chat on http://$(HOST):$(PORT)/ (WebSocket ws://$(HOST):$(PORT)/ws/chat/), up to $$(ulimit -n) open files"; \
	exec $(BIN)/daphne -b $(HOST) -p $(PORT) -v 0 $(PINGS) --websocket_timeout -1 \
	  $(DAPHNE_ARGS) chatsite.asgi:application

# N processes on consecutive ports sharing PostgreSQL and Redis, for a local
# try of the scale-out path: DATABASE_URL and REDIS_URL must be set. Each is
# supervised: one that dies (or is sent SIGTERM to restart it) starts again.
cluster: install
	@test -n "$$DATABASE_URL" -a -n "$$REDIS_URL" || { echo "Set DATABASE_URL and REDIS_URL (see docs/deploy.md)"; exit 2; }
	$(BIN)/python manage.py chat_migrate
	$(BIN)/python manage.py chat_presence --prune
	@ulimit -n "$$(ulimit -Hn)" 2>/dev/null || true; \
	trap 'kill 0' INT TERM EXIT; \
	for i in $$(seq 0 $$(($(N) - 1))); do \
	  port=$$(($(PORT) + i)); echo "Process $$((i + 1)) of $(N) on http://$(HOST):$$port/"; \
	  ( while :; do \
	      $(BIN)/daphne -b $(HOST) -p $$port -v 0 $(PINGS) --websocket_timeout -1 \
	        $(DAPHNE_ARGS) chatsite.asgi:application; \
	      echo "Process on port $$port exited ($$?); starting it again in 1 s (Ctrl-C stops all)"; sleep 1; \
	    done ) & \
	done; wait

# Debian's Chromium for the browser tests (no browser download works here).
browser:
	@command -v chromium >/dev/null || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Debian's nginx for the test of deploy/nginx.conf (the test starts its own
# nginx on free ports; the system's service is not used).
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  echo "Installing Debian's nginx for the deployment test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nginx >/dev/null; }

# Every test on the embedded default (SQLite, in-memory layer), and every
# test again on PostgreSQL + Redis, where the two-process tests also run:
# the two halves at once, since each spends much of its time waiting on the
# servers, browsers and clients it starts. Each has its own test database,
# Redis prefix, port range and coverage data file; the output of each comes
# whole when it ends (make's --output-sync). The SQLite half takes the
# browser tests' screenshots (test-artifacts/), the other skips them. Both measure branch coverage of
# the server and the client in the pytest process (pyproject.toml
# [tool.coverage]); `coverage` joins the two data files, prints the report
# and fails below the floors.
test: install-dev browser nginx
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-scaleout
	$(MAKE) --no-print-directory coverage

test-sqlite: install-dev
	env -u DATABASE_URL -u REDIS_URL COVERAGE_FILE=.coverage.sqlite TEST_PORTS=$(TEST_PORTS_SQLITE) \
	  $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --cov --cov-report= -m "not scaleout" $(PYTEST_ARGS)

test-scaleout: install-dev
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) CHANNEL_LAYER_PREFIX=test$$$$ \
	  COVERAGE_FILE=.coverage.scaleout TEST_PORTS=$(TEST_PORTS_SCALEOUT) TEST_SCREENSHOTS=0 \
	  $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --cov --cov-report= $(PYTEST_ARGS)

# Joins the halves' data that a test run left (either or both) into
# .coverage, then reports on it.
coverage: install-dev
	@data=$$(ls .coverage.sqlite .coverage.scaleout 2>/dev/null || true); \
	  if [ -n "$$data" ]; then $(BIN)/coverage combine --quiet $$data; fi
	$(BIN)/coverage report
	@for pair in messaging:$(COV_FLOOR_MESSAGING) accounts:$(COV_FLOOR_ACCOUNTS); do \
	  app=$${pair%%:*}; floor=$${pair#*:}; \
	  total=$$($(BIN)/coverage report --include="$$app/*" --format=total); \
	  $(BIN)/coverage report --include="$$app/*" --fail-under=$$floor >/dev/null || { \
	    echo "$$app/: branch coverage $$total% is below its floor of $$floor%"; exit 2; }; \
	  echo "$$app/: branch coverage $$total% (floor $$floor%)"; \
	done

# Mutation testing of the services ([tool.mutmut] in pyproject.toml), on
# SQLite, two mutants at a time; not part of `make test`: about a mutant a
# second on a quiet 2-core machine, some 1,850 mutants. `mutmut results`
# lists the survivors, `mutmut show NAME` shows one, and `mutmut run 'GLOB'`
# (e.g. 'messaging.services.blocks.*') tries only some; docs/quality.md
# has the figures and reads the survivors.
mutation: install-dev
	rm -rf mutants
	env -u DATABASE_URL -u REDIS_URL $(BIN)/mutmut run

# Style, types, layering and migrations; .ci/run runs it before the tests.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	env -u DATABASE_URL -u REDIS_URL $(BIN)/python manage.py makemigrations --check --dry-run
	$(MAKE) --no-print-directory lint-js

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The chat page's JavaScript and CSS (static/), formatted by the prettier
# pinned in package-lock.json; npm ci installs it on first use.
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

format-js: node_modules/.package-lock.json
	npx --no-install prettier --write static/

lint-js: node_modules/.package-lock.json
	npx --no-install prettier --check static/

clean:
	rm -rf $(VENV) var/test-db*.sqlite3*

