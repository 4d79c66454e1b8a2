"""Stageline settings: one module, driven by environment variables.

Defaults give the embedded mode (SQLite in WAL mode + a filesystem Celery broker under
``var/``), so one command starts everything on a laptop. Scale-out is set by environment
variables alone: ``DATABASE_URL=postgres://…`` and ``CELERY_BROKER_URL=redis://…`` or
``amqp://…``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from stageline.numbers import NumberError, parse_int

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STAGELINE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # the SQLite file, the embedded broker, work dirs


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def env_bool(name: str, default: bool = False) -> bool:
    """true/false, 1/0 or yes/no (any case); anything else stops start-up (a typo such as
    ``ture`` must not quietly mean false)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return BOOLEANS[value.strip().lower()]
    except KeyError:
        raise ImproperlyConfigured(
            f"{name} must be true or false (or 1/0, yes/no), not {value!r}"
        ) from None


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return parse_int(value, name)
    except NumberError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Turn ``sqlite:///path`` or ``postgres://user:pw@host:port/name`` into a DATABASES entry
    (parsed by dj-database-url). A relative SQLite path is relative to the project root;
    ``sqlite://`` alone is the default file under ``var/``."""
    scheme = url.partition("://")[0].lower()
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {scheme!r} is not supported: use sqlite:///PATH or "
            "postgres://USER:PASSWORD@HOST:PORT/NAME"
        )
    try:
        parsed = dj_database_url.parse(
            url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60), conn_health_checks=True
        )
    except ValueError as exc:  # a port that is not a number, a stray character
        raise ImproperlyConfigured(f"DATABASE_URL cannot be read: {exc}") from None
    if scheme != "sqlite":
        return {**parsed, "NAME": parsed["NAME"] or "stageline"}
    name: str | Path = parsed["NAME"]
    if name in {"", ":memory:"}:
        name = VAR_DIR / "stageline.sqlite3"
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE_DIR / name),  # an absolute path stays as it is
        "OPTIONS": {
            # IMMEDIATE: a writing transaction takes the write lock at BEGIN, so two
            # processes never deadlock upgrading read locks ("database is locked").
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                "PRAGMA busy_timeout=30000;"
                "PRAGMA foreign_keys=ON;"
            ),
        },
        "TEST": {"NAME": str(VAR_DIR / "test-stageline.sqlite3")},
    }


DEBUG = env_bool("DEBUG", False)
# The fallback is for a laptop only; `manage.py check --deploy` flags it in production.
SECRET_KEY = env_str("SECRET_KEY") or "django-insecure-stageline-local-development-key"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "guardian",
    "axes",
    "ninja",  # serves the API docs page's Swagger UI from static files (no CDN)
    "pipelines",
    "executions",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "stageline.errors.RefusalMiddleware",  # a Refusal a view did not catch -> 404/403/400/409
    "axes.middleware.AxesMiddleware",  # last: turns a refused log-in into the lockout page
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

CSRF_FAILURE_VIEW = "config.views.csrf_failure"  # plain words, not Django's developer text

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
                "django.template.context_processors.csp",
            ],
            "builtins": ["stageline.templatetags"],  # |when and |duration everywhere
        },
    },
]

DATABASES = {
    "default": database_from_url(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'stageline.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out (username, address)
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
GUARDIAN_RAISE_403 = False
GUARDIAN_RENDER_403 = False
ANONYMOUS_USER_NAME = None  # no guardian anonymous user: strangers see nothing

# Log-in throttling (django-axes, docs/security.md): failures are counted per (username, client
# address) in the database, so one user's failures never lock out another user; a lockout ends
# by itself after the cool-off, and superusers see and clear lockouts in the admin ("Axes").
AXES_FAILURE_LIMIT = env_int("STAGELINE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("STAGELINE_LOGIN_COOLOFF_MINUTES", 5))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a lockout ends on time, whatever is tried
AXES_CLIENT_IP_CALLABLE = "config.login.client_ip"
AXES_LOCKOUT_CALLABLE = "config.login.locked_out"
# How many reverse proxies in front of the web servers append to X-Forwarded-For; with 0 the
# header is ignored (a client could write anything in it).
STAGELINE_TRUSTED_PROXIES = env_int("STAGELINE_TRUSTED_PROXIES", 0)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Hashed, compressed file names once `collectstatic` has run (scripts/start runs it); before that
# (tests, a fresh checkout) WhiteNoise serves the files straight from static/.
_MANIFEST = (STATIC_ROOT / "staticfiles.json").exists()
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if _MANIFEST and not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

# Security: safe defaults, strict when not DEBUG.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
HTTPS = env_bool("STAGELINE_HTTPS", not DEBUG and env_bool("STAGELINE_PRODUCTION", False))
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS and env_bool("STAGELINE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if HTTPS else None

# Celery: the broker only carries "run this step now"; state lives in the database.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "localfs://localhost")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith(("localfs://", "filesystem://")):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Longer than any sane step would be wrong: a redelivered task is harmless (the step's
    # compare-and-set refuses a second run), so keep the default-ish hour.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("STAGELINE_VISIBILITY_TIMEOUT", 3600),
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Celery's Django fix-up closes every database connection before and after each task unless
# this is set (it then closes them every N tasks); config.celery closes them Django's way instead.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-work": {
        "task": "executions.tasks.reap",
        "schedule": float(env_int("STAGELINE_REAPER_INTERVAL_SECONDS", 5)),
        "options": {"expires": 30},
    },
}

# Engine knobs.
STAGELINE_RETRY_WINDOW_DAYS = env_int("STAGELINE_RETRY_WINDOW_DAYS", 30)
# Retry insights (executions/insights.py): a stage is flagged flaky when it passed on a retry with
# unchanged inputs after at least this share (in percent) of its failures (and at least twice).
STAGELINE_FLAKY_THRESHOLD_PERCENT = env_int("STAGELINE_FLAKY_THRESHOLD_PERCENT", 20)
STAGELINE_STEP_LEASE_SECONDS = env_int("STAGELINE_STEP_LEASE_SECONDS", 30)
STAGELINE_HEARTBEAT_SECONDS = env_int("STAGELINE_HEARTBEAT_SECONDS", 5)
STAGELINE_REDISPATCH_AFTER_SECONDS = env_int("STAGELINE_REDISPATCH_AFTER_SECONDS", 30)
# How long one run_step task may go on running the next steps of its execution itself (the
# engine's fast path, executions.engine.RunHere) before it sends the next one through the
# broker, so that other executions waiting on the queue get their turn. 0: never.
STAGELINE_TASK_BUDGET_SECONDS = env_int("STAGELINE_TASK_BUDGET_SECONDS", 5)
STAGELINE_LOG_LIMIT_BYTES = env_int("STAGELINE_LOG_LIMIT_BYTES", 5 * 1024 * 1024)
STAGELINE_WORK_DIR = Path(env_str("STAGELINE_WORK_DIR", str(VAR_DIR / "work")))
# Step isolation (executions/launcher.py, docs/security.md): auto | sandbox | other-user |
# same-user; the unprivileged user steps run as; folders a step may also write (colon-separated).
STAGELINE_STEP_ISOLATION = env_str("STAGELINE_STEP_ISOLATION", "auto")
STAGELINE_STEP_USER = env_str("STAGELINE_STEP_USER", "stageline-step")
STAGELINE_STEP_SHARED_DIRS = [p for p in env_str("STAGELINE_STEP_SHARED_DIRS").split(":") if p]
# host: steps reach the network as the worker does; none: the sandbox has only its own loopback.
STAGELINE_STEP_NETWORK = env_str("STAGELINE_STEP_NETWORK", "host")
STAGELINE_MAX_YAML_BYTES = env_int("STAGELINE_MAX_YAML_BYTES", 256 * 1024)
STAGELINE_MAX_INPUT_CHARS = env_int("STAGELINE_MAX_INPUT_CHARS", 4096)
# The JSON API (api/): requests per minute and per personal access token (0: no limit).
STAGELINE_API_RATE_PER_MINUTE = env_int("STAGELINE_API_RATE_PER_MINUTE", 120)
# Secrets at rest (stageline.crypto): the first key encrypts, every key decrypts. Empty: the key
# file $STAGELINE_VAR_DIR/secret.key, created (mode 0600) on first use.
STAGELINE_SECRET_KEYS = env_list("STAGELINE_SECRET_KEYS", "")
for _position, _key in enumerate(STAGELINE_SECRET_KEYS, start=1):
    try:
        Fernet(_key.encode())
    except ValueError:
        raise ImproperlyConfigured(
            f"STAGELINE_SECRET_KEYS: key {_position} is not a Fernet key (32 url-safe "
            "base64-encoded bytes; `manage.py reencrypt_secrets --new-key` prints one)"
        ) from None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "axes": {"level": "WARNING"},  # failures and lockouts, not every successful log-in
    },
}
