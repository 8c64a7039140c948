"""Settings for the chat server.

Everything an operator may change comes from the environment, with defaults
that are safe and need no external service: SQLite on disk and the in-memory
channel layer. ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` are the
scale-out path for several server processes.
"""

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

# Django's generic classes (ModelAdmin[Block] ...) subscriptable at run
# time, as the strict type check writes them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CHAT_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def env_list(name: str, default: Iterable[str], *, empty_means_empty: bool = False) -> list[str]:
    """A comma-separated list. Unset is the default; set and empty is the
    default too, unless `empty_means_empty` (where "none" must be sayable)."""
    value = os.environ.get(name)
    if value is None or (value.strip() == "" and not empty_means_empty):
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once per checkout.

    A random key kept under var/ means no well-known key ships with the code,
    and sessions survive restarts and are shared by processes on one machine.
    """
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: of processes starting at once on
    # a fresh checkout (`make test`'s two halves), one key wins, whole, and
    # the others read it.
    aside = VAR_DIR / f".secret_key.{os.getpid()}"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(50))
    try:
        os.link(aside, path)
    except FileExistsError:
        pass
    finally:
        aside.unlink()
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Proxies (addresses or networks, e.g. 127.0.0.1,10.0.0.0/8) whose
# X-Forwarded-For and X-Forwarded-Proto are believed; nobody else's are.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
# No inline script anywhere; styles from our files (and style attributes,
# which the admin uses); WebSockets to this origin.
CONTENT_SECURITY_POLICY = os.environ.get(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "accounts",
    "messaging",
    "legacy",
]

MIDDLEWARE = [
    # /healthz and /readyz, answered before anything else (chatsite/health.py).
    "chatsite.health.HealthMiddleware",
    # A request id for the log lines of each request (chatsite/logs.py).
    "chatsite.logs.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "chatsite.security.ContentSecurityPolicy",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        # Channels closes "old" connections around every database call; a
        # kept connection saves a reconnect (and SQLite's PRAGMAs) each time.
        conn_max_age=env_int("CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Many writers (several consumers, a second process): WAL lets readers
    # run beside the writer, IMMEDIATE takes the write lock at BEGIN so two
    # transactions never deadlock upgrading a read lock, and the busy
    # timeout makes a writer wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Tests use a file too: in-memory SQLite shared between threads locks
    # differently from the real thing.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"{os.environ.get('TEST_DB_NAME', 'test-db')}.sqlite3")}
elif os.environ.get("TEST_DB_NAME"):
    # Two test runs against one PostgreSQL server need two test databases.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DB_NAME"]}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer ----------------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
# Each pytest-xdist worker of `make test` has a Redis namespace of its own
# (the servers it starts inherit PYTEST_XDIST_WORKER with its environment).
CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "asgi") + os.environ.get("PYTEST_XDIST_WORKER", "")
# The connection options matter: channels_redis keeps connections open for
# as long as a WebSocket lives, and its receive blocks longer than redis-py
# 8's default socket_timeout of 5 s (channels_redis#422). No read timeout,
# TCP keep-alive to notice a dead peer, and a health check (PING) before
# using a connection idle for 30 s, so a restarted Redis costs a reconnect,
# not an error.
REDIS_HOST = {
    "address": REDIS_URL,
    "socket_timeout": None,
    # A Redis that does not answer must not hold a push (and the writer
    # behind it) for long: what is lost is pushed again from the database.
    "socket_connect_timeout": 2,
    "socket_keepalive": True,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}
# Which of channels_redis's layers carries the pushes between processes:
# "pubsub" (a PUBLISH to a Redis channel per group or connection, which the
# processes holding a member subscribe to), or "core" (a Redis list per
# channel, a sorted set per group). Pub/sub by measurement: 2.4-2.9x the
# messages for a third of the server CPU (docs/deploy.md, "Choosing the
# Redis channel layer").
CHANNEL_LAYER = os.environ.get("CHANNEL_LAYER", "").strip().lower() or "pubsub"
if CHANNEL_LAYER not in {"core", "pubsub"}:
    raise ImproperlyConfigured(f"CHANNEL_LAYER must be core or pubsub, not {CHANNEL_LAYER!r}")
if REDIS_URL and CHANNEL_LAYER == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            # Nothing queued in Redis: no capacity, expiry nor group expiry
            # to set. Riding out a Redis restart (chatsite/layers.py).
            "BACKEND": "chatsite.layers.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_HOST], "prefix": CHANNEL_LAYER_PREFIX},
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels_redis's, riding out a Redis restart (chatsite/layers.py).
            "BACKEND": "chatsite.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_HOST],
                "capacity": env_int("CHANNEL_CAPACITY", 1000),
                "expiry": 60,
                "prefix": CHANNEL_LAYER_PREFIX,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chatsite.layers.InMemoryChannelLayer",
            # Events queued per connection before the layer drops them (a
            # dropped message is pushed again from its pending delivery).
            "CONFIG": {"capacity": env_int("CHANNEL_CAPACITY", 1000)},
        }
    }

# --- Accounts -------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "accounts:login"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("PASSWORD_MIN_LENGTH", 8)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Consecutive failed logins per (username, client IP) before a lockout.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 3)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 60)
# What one client address may make the server do, whatever the usernames:
# failed password checks (each an Argon2 hash: ~0.1 s of CPU and 100 MiB)
# and sign-ups, per window. 0 turns a budget off.
CHAT_PASSWORD_FAILURES_PER_ADDRESS = env_int("CHAT_PASSWORD_FAILURES_PER_ADDRESS", 30)
CHAT_PASSWORD_WINDOW_SECONDS = env_float("CHAT_PASSWORD_WINDOW_SECONDS", 600)
CHAT_SIGNUPS_PER_ADDRESS = env_int("CHAT_SIGNUPS_PER_ADDRESS", 10)
CHAT_SIGNUP_WINDOW_SECONDS = env_float("CHAT_SIGNUP_WINDOW_SECONDS", 3600)
# Addresses (or networks) the two budgets above do not apply to: this
# machine by default (its own tests, load generators and the protocol's
# black-box checks sign up many users), nobody when set and empty. A request
# a proxy not in TRUSTED_PROXIES forwarded (X-Forwarded-For from loopback:
# nginx on this machine) is never spared (docs/deploy.md, "What the
# per-address budgets do behind a proxy").
CHAT_ADDRESS_BUDGET_EXEMPT = env_list("CHAT_ADDRESS_BUDGET_EXEMPT", ["127.0.0.0/8", "::1"], empty_means_empty=True)
# Password hashes one process computes at once (the rest wait their turn).
CHAT_HASHING_CONCURRENCY = env_int("CHAT_HASHING_CONCURRENCY", os.cpu_count() or 2)

# Resume tokens (protocol 1.1) are sessions too; this is how long they last.
CHAT_TOKEN_SECONDS = env_int("CHAT_TOKEN_SECONDS", 14 * 24 * 3600)

# Password resets by email: a link valid this long, and once (it carries
# the password's hash). Requests per client address and per email address,
# per window (0 turns a budget off).
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_SECONDS", 3600)
CHAT_RESETS_PER_ADDRESS = env_int("CHAT_RESETS_PER_ADDRESS", 10)
CHAT_RESETS_PER_ACCOUNT = env_int("CHAT_RESETS_PER_ACCOUNT", 3)
CHAT_RESET_WINDOW_SECONDS = env_float("CHAT_RESET_WINDOW_SECONDS", 3600)
# A deleted account's name is kept from new sign-ups this many days.
CHAT_DELETED_NAME_DAYS = env_int("CHAT_DELETED_NAME_DAYS", 30)

# --- Email ------------------------------------------------------------------

# Console by default (the reset link lands in the server's log); for
# production EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and
# the SMTP settings below.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "chat@localhost")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Chat -------------------------------------------------------------------

# Each server process ticks every CHAT_PUMP_SECONDS: it refreshes the
# heartbeat of its connections and pushes again what is unacked after
# CHAT_REDELIVER_SECONDS. A heartbeat older than the presence timeout means
# the process died: that user no longer counts as online.
CHAT_PUMP_SECONDS = env_float("CHAT_PUMP_SECONDS", 5)
CHAT_PRESENCE_TIMEOUT_SECONDS = env_float("CHAT_PRESENCE_TIMEOUT_SECONDS", 45)
CHAT_REDELIVER_SECONDS = env_float("CHAT_REDELIVER_SECONDS", 30)
# A logout or a saved account (password, active flag) ends its socket at
# once; every CHAT_SESSIONS_CHECK_SECONDS each process also checks every
# socket's login, for what gives no signal (an expiry, an UPDATE).
CHAT_SESSIONS_CHECK_SECONDS = env_float("CHAT_SESSIONS_CHECK_SECONDS", 60)
# Python's cyclic garbage collector runs its youngest generation after this
# many new objects (Python's default: 700). Each request makes dozens that
# live until the database answers; collected that often, thousands of them
# in flight were promoted, and full collections of every connection's
# objects followed: at 3,000 online, 0.3-0.5 s pauses, a third of the
# process's time during a run of broadcasts (docs/performance.md, item 5).
CHAT_GC_YOUNG_OBJECTS = env_int("CHAT_GC_YOUNG_OBJECTS", 50_000)
# Messages (private and broadcast together) one user may send per window.
CHAT_RATE_LIMIT_COUNT = env_int("CHAT_RATE_LIMIT_COUNT", 60)
CHAT_RATE_LIMIT_SECONDS = env_float("CHAT_RATE_LIMIT_SECONDS", 10)
# Broadcasts write one row per user: fewer of them.
CHAT_BROADCAST_RATE_COUNT = env_int("CHAT_BROADCAST_RATE_COUNT", 10)
CHAT_BROADCAST_RATE_SECONDS = env_float("CHAT_BROADCAST_RATE_SECONDS", 60)
CHAT_MAX_BODY_CHARS = 4000
# Members a room may hold (protocol 1.2): an add past it answers room_full.
CHAT_ROOM_MAX_MEMBERS = env_int("CHAT_ROOM_MAX_MEMBERS", 1000)
# A frame over this gets too_large; over CHAT_MAX_MESSAGE_BYTES the server
# does not even read it, and closes the connection (1009).
CHAT_MAX_FRAME_BYTES = 64 * 1024
CHAT_MAX_MESSAGE_BYTES = 128 * 1024
CHAT_RECENT_SECONDS = 3600
# A presence_batch frame at most this often, for clients that ask for it.
CHAT_PRESENCE_BATCH_SECONDS = env_float("CHAT_PRESENCE_BATCH_SECONDS", 1)
# ... stretched by one interval per this many listening connections of a
# process, up to the maximum (messaging/hub.py: a login storm stays linear).
CHAT_PRESENCE_BATCH_USERS = env_int("CHAT_PRESENCE_BATCH_USERS", 100)
CHAT_PRESENCE_BATCH_MAX_SECONDS = env_float("CHAT_PRESENCE_BATCH_MAX_SECONDS", 5)
# Sending exactly once: how long a client_id is remembered.
CHAT_CLIENT_ID_SECONDS = 24 * 3600
# How often a process deletes rows nobody needs any more (client ids older
# than a day, login attempts older than CHAT_LOGIN_ATTEMPTS_KEEP_DAYS).
CHAT_PRUNE_SECONDS = env_float("CHAT_PRUNE_SECONDS", 300)
CHAT_LOGIN_ATTEMPTS_KEEP_DAYS = env_int("CHAT_LOGIN_ATTEMPTS_KEEP_DAYS", 30)

# --- Per-connection bounds ----------------------------------------------------

# Requests a connection may make per second (0: no limit), with bursts.
CHAT_CONNECTION_RATE = env_float("CHAT_CONNECTION_RATE", 100)
CHAT_CONNECTION_BURST = env_int("CHAT_CONNECTION_BURST", 200)
# What a connection may have been sent and not yet read before it is closed
# (1008): a client that never reads cannot grow the server's memory.
CHAT_MAX_UNSENT_BYTES = env_int("CHAT_MAX_UNSENT_BYTES", 4 * 1024 * 1024)
# Pending messages go out a page at a time, each once the client has read
# all but this much; a client that stops reading for the stall time gets
# the rest later.
CHAT_PENDING_HIGH_WATER_BYTES = 256 * 1024
CHAT_PENDING_STALL_SECONDS = env_float("CHAT_PENDING_STALL_SECONDS", 30)
# An anonymous connection must log in within this time.
CHAT_LOGIN_DEADLINE_SECONDS = env_float("CHAT_LOGIN_DEADLINE_SECONDS", 60)
# Logins by token or session under way at once per process, at most (a
# password login is bounded by the hashing pool instead); past it one waits
# its turn, and one that would wait more than CHAT_LOGIN_WAIT_SECONDS is told
# `unavailable` with a `retry_after` (a restart's crowd of thousands is
# served in turns instead of queueing past the clients' request timeout).
CHAT_LOGINS_IN_PROGRESS = env_int("CHAT_LOGINS_IN_PROGRESS", 200)
CHAT_LOGIN_WAIT_SECONDS = env_float("CHAT_LOGIN_WAIT_SECONDS", 3)
# /metrics (Prometheus): open to these addresses or networks, and to a request
# with `Authorization: Bearer CHAT_METRICS_TOKEN` when a token is set; 404 to
# anyone else.
CHAT_METRICS_ALLOWED = env_list("CHAT_METRICS_ALLOWED", ["127.0.0.0/8", "::1"], empty_means_empty=True)
CHAT_METRICS_TOKEN = os.environ.get("CHAT_METRICS_TOKEN", "")
# On SIGTERM a process tells its clients to reconnect (1012), commits what
# it holds and exits within this many seconds.
CHAT_SHUTDOWN_SECONDS = env_float("CHAT_SHUTDOWN_SECONDS", 10)

# --- Operations ---------------------------------------------------------------

# /readyz gives each check (database and migrations, Redis) this long before
# it answers 503; a success of the migration check is trusted this long.
CHAT_READYZ_TIMEOUT_SECONDS = env_float("CHAT_READYZ_TIMEOUT_SECONDS", 1.5)
CHAT_READYZ_MIGRATIONS_CACHE_SECONDS = env_float("CHAT_READYZ_MIGRATIONS_CACHE_SECONDS", 60)

# --- Attachments (pictures and files in messages) ----------------------------

# Files live in the "attachments" storage. By default a folder on this disk
# (MEDIA_ROOT, var/media); with CHAT_FILES_S3_BUCKET set, an S3-compatible
# store through django-storages and boto3 (credentials from boto3's usual
# environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), which processes on
# several machines share. Either way every download goes through Django's
# check of who may see the message (messaging/uploads.py).
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT") or VAR_DIR / "media")
CHAT_FILES_S3_BUCKET = os.environ.get("CHAT_FILES_S3_BUCKET", "")
if CHAT_FILES_S3_BUCKET:
    _attachments_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": CHAT_FILES_S3_BUCKET,
            "endpoint_url": os.environ.get("CHAT_FILES_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("CHAT_FILES_S3_REGION") or None,
            "default_acl": None,
            # Never a public or presigned URL: downloads are proxied by the view.
            "querystring_auth": False,
            "file_overwrite": False,
        },
    }
else:
    _attachments_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": None},
    }
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "attachments": _attachments_storage,
}
# An upload bigger than this goes to a temporary file as it arrives, not
# to memory: a 10 MiB upload costs the process no more than this.
FILE_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024
CHAT_ATTACHMENT_MAX_BYTES = env_int("CHAT_ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024)
CHAT_ATTACHMENTS_PER_MESSAGE = env_int("CHAT_ATTACHMENTS_PER_MESSAGE", 10)
CHAT_ATTACHMENT_BYTES_PER_DAY = env_int("CHAT_ATTACHMENT_BYTES_PER_DAY", 200 * 1024 * 1024)
# Images larger than this many pixels are refused (decompression bombs).
CHAT_IMAGE_MAX_PIXELS = env_int("CHAT_IMAGE_MAX_PIXELS", 40_000_000)
CHAT_THUMBNAIL_PIXELS = 400
# Processes per server process that parse, check and re-encode uploads
# (the rest queue), out of the server's GIL: a core is left to the event loop.
CHAT_UPLOAD_PROCESSES = env_int("CHAT_UPLOAD_PROCESSES", max(1, (os.cpu_count() or 2) - 1))
# Their CPU priority below the server's (os.nice): chat first, then uploads.
CHAT_UPLOAD_NICE = env_int("CHAT_UPLOAD_NICE", 10)
# Uploads past the body's intake handled at once per server process (the
# rest wait their turn, their bodies on disk): each runs Django's middleware
# and view in a thread of its own, and fifty such threads at once kept the
# event loop from the GIL for a fifth of a second.
CHAT_UPLOAD_CONCURRENCY = env_int("CHAT_UPLOAD_CONCURRENCY", 4)
# Start them with the process (at its first login), so that the first upload
# does not wait a second for them; off, at the first upload. The test
# suite's hundreds of short-lived servers turn it off.
CHAT_UPLOAD_PREWARM = env_bool("CHAT_UPLOAD_PREWARM", True)
# Uploads never sent are removed after this long (`manage.py chat_cleanup`).
CHAT_UNSENT_ATTACHMENT_SECONDS = env_int("CHAT_UNSENT_ATTACHMENT_SECONDS", 24 * 3600)
# Behind nginx: after Django's check, nginx sends the file from this
# internal location (deploy/nginx.conf); empty, Django streams it itself.
# Only for the disk storage.
CHAT_FILES_ACCEL_REDIRECT = os.environ.get("CHAT_FILES_ACCEL_REDIRECT", "")
# The file types accepted, by extension: the type a file is served as comes
# from here, never from what the client said. Never HTML or SVG.
CHAT_ATTACHMENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
    "txt": "text/plain",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "zip": "application/zip",
    "gz": "application/gzip",
    "tgz": "application/gzip",
    "tar": "application/x-tar",
    "7z": "application/x-7z-compressed",
}

# --- Static files, i18n -----------------------------------------------------

STATIC_URL = "static/"
# Only for `collectstatic` behind a separate web server; unused by default.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the app and project folders: no collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# LOG_FORMAT=json: every line one JSON object (time, level, logger, process,
# message, request_id); text by default (chatsite/logs.py). Imported by
# path, not as a module: settings must not import Django's HTTP machinery.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "").strip().lower() or "text"
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "chatsite.logs.ContextFilter"}},
    "formatters": {
        "text": {"()": "chatsite.logs.TextFormatter"},
        "json": {"()": "chatsite.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {
        "chat": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO"), "propagate": False},
        # SQL with its parameters (password hashes, message bodies) is never
        # logged, whatever LOG_LEVEL and DEBUG say.
        "django.db.backends": {"level": "INFO"},
    },
}
