# The two commands of the README:
#   make run    set up and serve the chat on $(HOST):$(PORT)
#   make test   set up and run every test
# Both create .venv and install requirements.txt on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 2000
# Extra daphne flags, e.g. DAPHNE_ARGS=--proxy-headers behind a reverse proxy.
DAPHNE_ARGS ?=

# The scale-out half of the suite runs against these (started before the
# session on dev and CI machines; see README).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL    ?= redis://127.0.0.1:6379/0

.PHONY: run test test-sqlite test-scaleout install browser clean

install: $(BIN)/.installed

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py chat_presence --prune
	@# Served beyond this machine (HOST=0.0.0.0) with no ALLOWED_HOSTS given,
	@# accept any Host name so the LAN address works; the WebSocket origin
	@# check still refuses other sites' pages.
	@if [ -z "$$ALLOWED_HOSTS" ] && [ "$(HOST)" != 127.0.0.1 ] && [ "$(HOST)" != localhost ]; then \
	  export ALLOWED_HOSTS='*'; echo "Accepting any Host name; set ALLOWED_HOSTS to restrict."; fi; \
	echo "Chat on http://$(HOST):$(PORT)/ (WebSocket ws://$(HOST):$(PORT)/ws/chat/)"; \
	exec $(BIN)/daphne -b $(HOST) -p $(PORT) --ping-interval 15 --ping-timeout 30 --websocket_timeout -1 \
	  $(DAPHNE_ARGS) chatsite.asgi:application

# Debian's Chromium for the browser tests (no browser download works here).
browser:
	@command -v chromium >/dev/null || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: install browser
	$(MAKE) --no-print-directory test-sqlite
	$(MAKE) --no-print-directory test-scaleout

# Everything, on the embedded default: SQLite and the in-memory layer.
test-sqlite: install
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -m "not scaleout"

# The database and consumer tests again on PostgreSQL and Redis, plus two
# server processes sharing them.
test-scaleout: install
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) CHANNEL_LAYER_PREFIX=test$$$$ \
	  $(BIN)/pytest -m "not browser" tests/test_accounts.py tests/test_messaging_services.py tests/test_consumer.py \
	  tests/test_admin.py tests/test_commands.py tests/test_scaleout.py

clean:
	rm -rf $(VENV) var/test-db.sqlite3*
