"""Sluice settings: every knob comes from an environment variable with a safe default.

Two ways to run (README.md, "Configuration"):
- embedded (the default): SQLite in a data folder, local-memory cache (the relay's shared cache
  in files there, config.cache), in-memory channel layer, Celery on kombu's filesystem
  transport; secrets are generated once and kept in the data folder.
- production: ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` set; secrets come from the
  environment, and a node missing one refuses to start (``SLUICE_GENERATE_SECRETS=1``: a single
  node, or tests, may generate them into the data folder instead).
"""

import os
import sys
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config import shared_secrets
from config.logging import FORMAT as LOG_FORMAT

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DATA_DIR = Path(env("SLUICE_DATA_DIR", str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Proxies whose X-Forwarded-For is believed (IPs or CIDRs). Empty: the socket peer is the client,
# so nobody can spoof an IP allow-list by sending the header.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")
# Origins browsers may call /v1 from ("*": any; the API key, not a cookie, is the credential).
RELAY_CORS_ORIGINS = env_list("RELAY_CORS_ORIGINS", "*")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "rest_framework",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.github",
    "channels",
    "accounts",
    "billing",
    "relay",
    "midjourney",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from this site (no CDN)
    "api",
]

# Only the site goes through these; /v1 is served by relay.http with none.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files in every mode (no web server needed in embedded mode): README "Static files".
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
SITE_ID = 1

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

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{DATA_DIR / 'sluice.sqlite3'}"), conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at BEGIN, so the
    # server, worker and beat queue on the busy timeout instead of failing "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI each request may hold its own connection: pool them (CONN_MAX_AGE must be 0).
    # Every connection is bounded in time (docs/faults.md), so a PostgreSQL that stops,
    # restarts or stalls is noticed in seconds, not after the kernel's TCP timeouts: connect
    # timeout, keepalives on an idle connection, and, on the server's side, statement_timeout
    # and idle_in_transaction_session_timeout (0 turns either off; migrations of big tables
    # may need that). The pool's wait for a free connection is short: a call that cannot get
    # one is better answered 503 than kept waiting. The pool checks a connection before
    # handing it out (one empty query), so the connections a restart broke are dropped rather
    # than failing the next calls.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env_bool("DATABASE_CHECK_CONNECTIONS", True)
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": int(env("DATABASE_POOL_MIN", "2")),
            "max_size": int(env("DATABASE_POOL_MAX", "20")),
            "timeout": float(env("DATABASE_POOL_TIMEOUT", "2")),
        },
        "connect_timeout": int(env("DATABASE_CONNECT_TIMEOUT", "2")),  # libpq: 2 at least
        "keepalives": 1,
        "keepalives_idle": int(env("DATABASE_KEEPALIVES_IDLE", "10")),
        "keepalives_interval": int(env("DATABASE_KEEPALIVES_INTERVAL", "3")),
        "keepalives_count": int(env("DATABASE_KEEPALIVES_COUNT", "3")),
        "options": (
            f"-c statement_timeout={int(float(env('DATABASE_STATEMENT_TIMEOUT', '30')) * 1000)}"
            " -c idle_in_transaction_session_timeout="
            f"{int(float(env('DATABASE_IDLE_IN_TRANSACTION_TIMEOUT', '60')) * 1000)}"
        ),
    }
# When the database is away, a call waits at most RELAY_DATABASE_WAIT_SECONDS for a read or
# its hold, then is answered 503 with x-should-retry and Retry-After; the process then answers
# calls that need the database at once for DATABASE_RETRY_SECONDS before trying again, and the
# pool's reconnection attempts are at most DATABASE_RECONNECT_MAX_SECONDS apart
# (relay.database; docs/faults.md).
RELAY_DATABASE_WAIT_SECONDS = float(env("RELAY_DATABASE_WAIT_SECONDS", "2"))
DATABASE_RETRY_SECONDS = float(env("DATABASE_RETRY_SECONDS", "0.5"))
DATABASE_RECONNECT_MAX_SECONDS = float(env("DATABASE_RECONNECT_MAX_SECONDS", "0.5"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

# --- Secrets ---------------------------------------------------------------------------------
# SECRET_KEY, KEY_LOOKUP_SECRET and KEY_ENCRYPTION_KEYS (config.shared_secrets says what each
# is for). Against SQLite they are generated once into the data folder when the environment
# lacks them. A server database is shared by several nodes, and a node that generated its own
# would fail every key made on another: there, a missing one stops the process at once, unless
# SLUICE_GENERATE_SECRETS=1 says this node is alone (tests, a single-node trial). The one
# command that must run without them is the one that makes them.
_may_generate_secrets = env_bool("SLUICE_GENERATE_SECRETS") or (
    DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
)
_missing_secrets = shared_secrets.missing(os.environ)
if _missing_secrets and not _may_generate_secrets and sys.argv[1:2] != ["generate_secrets"]:
    raise ImproperlyConfigured(
        f"DATABASE_URL names a server database, so every node must share its secrets, but "
        f"{', '.join(_missing_secrets)} {'is' if len(_missing_secrets) == 1 else 'are'} not set "
        f"in the environment. Run `manage.py generate_secrets` once, put the lines it prints "
        f"into the environment of every node, and start again (a single node, or a test run, "
        f"may set SLUICE_GENERATE_SECRETS=1 to keep generated ones in SLUICE_DATA_DIR instead)."
    )


def kept_secret(name: str) -> str:
    """A secret from the environment, else from the data folder, generated there once."""
    if os.environ.get(name):
        return os.environ[name]
    if not _may_generate_secrets:  # generate_secrets, running before the secrets exist
        return shared_secrets.fresh(name)  # a throwaway: never written, never used
    path = DATA_DIR / f".{name.lower()}"
    if not path.exists():
        path.write_text(shared_secrets.fresh(name))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = kept_secret("SECRET_KEY")
KEY_LOOKUP_SECRET = kept_secret("KEY_LOOKUP_SECRET")
# Newest first: keys are encrypted with the first and decrypted with any, so an operator
# rotates by prepending one.
KEY_ENCRYPTION_KEYS = kept_secret("KEY_ENCRYPTION_KEYS").split(",")

# --- Redis: cache, channel layer, Celery broker ---------------------------------------------
# "shared" is the relay's shared cache (config.cache): keys, prices and the versions that tell
# every process when its own copies went stale. Every process must reach the same one: Redis,
# or without it a folder of files (a local-memory cache would be one per process, and a change
# made by a management command would reach the server only when its copies expired).
REDIS_URL = env("REDIS_URL")
# A Redis that stops answering must cost a call at most this long (its default is to wait for
# ever); the relay's shared cache then leaves it alone for CACHE_RETRY_SECONDS and serves from
# the process's copies and the database (config.cache, docs/faults.md).
REDIS_TIMEOUT = float(env("REDIS_TIMEOUT", "0.5"))
CACHE_RETRY_SECONDS = float(env("CACHE_RETRY_SECONDS", "1"))
if REDIS_URL:
    redis_cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT},
    }
    # "default" holds the site's rate limits and throttles: open while Redis is away unless
    # RATE_LIMITS_FAIL_OPEN is off (config.rate_limit_cache); "guards" counts guesses at codes
    # and keys, and fails closed.
    rate_limits = dict(redis_cache)
    if env_bool("RATE_LIMITS_FAIL_OPEN", True):
        rate_limits["BACKEND"] = "config.rate_limit_cache.FailOpenRedisCache"
    CACHES = {"default": rate_limits, "shared": dict(redis_cache), "guards": dict(redis_cache)}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "guards": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
            # A few hundred keys and models in use at once; beyond this a third of the files
            # go (each one is reloaded when next needed), which keeps every write cheap.
            "OPTIONS": {"MAX_ENTRIES": 1000},
        },
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    broker_dir = DATA_DIR / "broker"
    for sub in ("queue", "control"):
        (broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"  # messages written whole
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "control_folder": str(broker_dir / "control"),
    }
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Celery's lines go through LOGGING (one format for every process), not a root logger of its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Accounts -------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Sign-up, login and mail are django-allauth's (docs/accounts.md); accounts.adapters adapts them
# to the site: sign-up can be closed in admin, new accounts get their trial credit and invite
# rewards, and a mail that cannot be sent is logged and explained, never an error page.
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "email*", "password1*", "password2*"]
# "none": no confirmation mail; "optional" (default): one is sent, nobody waits for it;
# "mandatory": nobody signs in before confirming (needs working mail).
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", "optional")
if ACCOUNT_EMAIL_VERIFICATION not in {"none", "optional", "mandatory"}:
    raise ImproperlyConfigured("ACCOUNT_EMAIL_VERIFICATION must be none, optional or mandatory")
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_GET = False  # logging out is a POST (a link on another site cannot do it)
# allauth's limits on POSTs, counted in the cache (Redis in production, so every node shares
# them); the rest keep allauth's defaults. Rates are "count/period/per", per "ip" or "key" (the
# login or email typed). A page over its limit answers 429 with a page that says so.
ACCOUNT_RATE_LIMITS = {
    "login": env("RATE_LIMIT_LOGIN", "30/m/ip"),
    "login_failed": env("RATE_LIMIT_LOGIN_FAILED", "10/m/ip,5/5m/key"),
    "signup": env("RATE_LIMIT_SIGNUP", "20/m/ip"),
    "reset_password": env("RATE_LIMIT_RESET_PASSWORD", "20/m/ip,5/m/key"),
}
LOGIN_REDIRECT_URL = "/dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "/"
# GitHub login: the OAuth app's id and secret from the environment, or a SocialApp added in
# admin (then leave these unset). GITHUB_URL points at a GitHub Enterprise server (the tests
# point it at a loopback fake of GitHub, tests/fake_github.py).
SOCIALACCOUNT_PROVIDERS: dict[str, dict] = {"github": {"SCOPE": ["read:user", "user:email"]}}
if env("GITHUB_CLIENT_ID"):
    SOCIALACCOUNT_PROVIDERS["github"]["APP"] = {
        "client_id": env("GITHUB_CLIENT_ID"),
        "secret": env("GITHUB_CLIENT_SECRET"),
    }
if env("GITHUB_URL"):
    SOCIALACCOUNT_PROVIDERS["github"]["GITHUB_URL"] = env("GITHUB_URL")
SOCIALACCOUNT_QUERY_EMAIL = True  # GitHub's /user/emails: the verified primary address
SOCIALACCOUNT_LOGIN_ON_GET = False  # leaving for GitHub is a POST with the CSRF token
SOCIALACCOUNT_STORE_TOKENS = False  # the site never calls GitHub on the user's behalf

# --- Mail -----------------------------------------------------------------------------------
# Without EMAIL_HOST, mails are written to the server's console (embedded mode needs no mail
# server); with it, sent by SMTP. Either way a failure is logged and explained to the person
# (accounts.adapters), and EMAIL_TIMEOUT bounds how long a page waits for the server.
EMAIL_HOST = env("EMAIL_HOST")
EMAIL_BACKEND = env(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = int(env("EMAIL_PORT", "25"))
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = float(env("EMAIL_TIMEOUT", "10"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "webmaster@localhost")

# --- Relay and billing ----------------------------------------------------------------------
# Largest request bodies accepted on /v1, checked against Content-Length before reading and
# counted for chunked bodies: multipart uploads (audio, files) may be large, JSON much less
# (images travel in it as base64; parsing a huge JSON document costs many times its size).
RELAY_MAX_BODY_BYTES = int(env("RELAY_MAX_BODY_BYTES", str(64 * 1024 * 1024)))  # multipart
RELAY_MAX_JSON_BYTES = int(env("RELAY_MAX_JSON_BYTES", str(16 * 1024 * 1024)))
# Request headers: at most this many, this many bytes in all (431 beyond), and this long to
# arrive (a connection that dribbles its headers is closed: slowloris).
RELAY_MAX_HEADERS = int(env("RELAY_MAX_HEADERS", "100"))
RELAY_MAX_HEADER_BYTES = int(env("RELAY_MAX_HEADER_BYTES", str(32 * 1024)))
RELAY_HEADER_TIMEOUT = float(env("RELAY_HEADER_TIMEOUT", "10"))
# Seconds for the whole request body to arrive once the headers have (408 beyond).
RELAY_BODY_TIMEOUT = float(env("RELAY_BODY_TIMEOUT", "60"))
# Upstream connections per process, and how long a call may wait for a free one before it is
# answered 503 (a full pool must not make every other call wait for the read timeout).
RELAY_UPSTREAM_POOL_SIZE = int(env("RELAY_UPSTREAM_POOL_SIZE", "512"))
RELAY_POOL_WAIT_SECONDS = float(env("RELAY_POOL_WAIT_SECONDS", "2"))
# Calls in flight: per process (503 beyond), and per key (429 beyond; 0 = no per-key cap).
RELAY_MAX_CALLS_IN_FLIGHT = int(env("RELAY_MAX_CALLS_IN_FLIGHT", "2000"))
RELAY_MAX_CALLS_PER_KEY = int(env("RELAY_MAX_CALLS_PER_KEY", "0"))
# Holds placed ahead for a key's next calls (relay.ready_holds), so a call does not wait for its
# hold's transaction: placed for a key called again within half of
# RELAY_READY_HOLD_IDLE_SECONDS, given back that long after the key's last call. On by
# default with PostgreSQL (where a hold's transaction is most of the relay's added latency).
RELAY_READY_HOLDS = int(
    env(
        "RELAY_READY_HOLDS",
        "2" if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" else "0",
    )
)
RELAY_READY_HOLD_IDLE_SECONDS = float(env("RELAY_READY_HOLD_IDLE_SECONDS", "10"))
# Entries kept in each process's memo of keys, prices and the like (least recently used go).
RELAY_LOCAL_CACHE_ENTRIES = int(env("RELAY_LOCAL_CACHE_ENTRIES", "10000"))
# When a call names no output limit, or one its balance cannot cover, send the upstream the
# largest limit the balance covers, so the call cannot cost more than its hold ("on"). "off":
# send what the client asked (overdraw is then bounded per call by the model's maximum output).
RELAY_CAP_OUTPUT_TO_BALANCE = env_bool("RELAY_CAP_OUTPUT_TO_BALANCE", True)
# The largest output of a model whose price row names none (ModelPrice.max_output_tokens):
# held for a call that names no output limit, and the most any call of it may ask for.
RELAY_DEFAULT_MAX_OUTPUT_TOKENS = int(env("RELAY_DEFAULT_MAX_OUTPUT_TOKENS", "16384"))
# Service tiers a client may ask for (OpenAI `service_tier`, Anthropic `service_tier`), each
# with its multiplier on the charge; any other tier is refused with a 400 naming it.
RELAY_SERVICE_TIER_RATIOS = {
    name.strip(): Decimal(ratio)
    for name, ratio in (
        item.split(":")
        for item in env_list(
            "RELAY_SERVICE_TIER_RATIOS",
            "auto:1,default:1,standard:1,standard_only:1,flex:0.5,priority:2",
        )
    )
}
# anthropic-beta values forwarded to Anthropic; others are refused with a 400 naming them
# (some betas cost more, e.g. the 1M-token context window, and are not priced here).
RELAY_ANTHROPIC_BETAS = env_list(
    "RELAY_ANTHROPIC_BETAS",
    "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11,token-efficient-tools-2025-02-19,"
    "fine-grained-tool-streaming-2025-05-14,interleaved-thinking-2025-05-14,"
    "output-128k-2025-02-19,pdfs-2024-09-25,computer-use-2025-01-24,context-management-2025-06-27",
)
# Searches a server-side web search tool may run in one call when the client sets no
# max_uses (it is sent upstream, and the hold covers that many searches).
RELAY_WEB_SEARCH_MAX_USES = int(env("RELAY_WEB_SEARCH_MAX_USES", "5"))
# max_tokens sent to an Anthropic upstream for an OpenAI-format call that names none.
RELAY_ANTHROPIC_DEFAULT_MAX_TOKENS = int(env("RELAY_ANTHROPIC_DEFAULT_MAX_TOKENS", "4096"))
RELAY_CONNECT_TIMEOUT = float(env("RELAY_CONNECT_TIMEOUT", "10"))
RELAY_READ_TIMEOUT = float(env("RELAY_READ_TIMEOUT", "600"))
# A hold whose call never settled (its worker died) is released after this many seconds; it
# must outlast the longest call, so it is the read timeout plus a margin by default.
HOLD_TTL_SECONDS = int(env("HOLD_TTL_SECONDS", str(int(RELAY_READ_TIMEOUT) + 300)))
HOLD_SWEEP_SECONDS = float(env("HOLD_SWEEP_SECONDS", "60"))
# What each process caches, what drops it and how soon: config.cache. Changes saved through
# Django drop the copies at once; these bound what a change made behind Django's back can take.
# Keys and prices live this long in the shared cache, keys and channels as long in a process:
RELAY_CACHE_SECONDS = int(env("RELAY_CACHE_SECONDS", "60"))
# Prices, group ratios and the shared versions are re-read this often in each process, so a
# change saved in another process (or node) reaches it within this time.
RELAY_LOCAL_CACHE_SECONDS = float(env("RELAY_LOCAL_CACHE_SECONDS", "1"))

# A server process freezes what its start-up made out of the garbage collector's sight
# (config.asgi.settle_the_heap): full collections then take a few ms instead of 100 or more.
FREEZE_HEAP_AT_START = env_bool("FREEZE_HEAP_AT_START", True)

CELERY_BEAT_SCHEDULE = {
    "release-expired-holds": {
        "task": "billing.tasks.release_expired_holds",
        "schedule": HOLD_SWEEP_SECONDS,
    },
    # VIP tiers whose time is up put their users back in the default group (billing.tiers).
    "end-expired-tiers": {
        "task": "billing.tasks.end_expired_tiers",
        "schedule": float(env("TIER_SWEEP_SECONDS", "60")),
    },
    # Trial credit whose lifetime ended leaves the balance (billing.trials).
    "expire-trials": {
        "task": "billing.tasks.expire_trials",
        "schedule": float(env("TRIAL_SWEEP_SECONDS", "600")),
    },
    # Revoked or expired sub-keys give what is left back to their reseller (billing.subkeys).
    "return-subkey-balances": {
        "task": "billing.tasks.return_subkey_balances",
        "schedule": float(env("SUBKEY_SWEEP_SECONDS", "300")),
    },
    # One email to users whose balance fell to their threshold (billing.notices).
    "notify-low-balances": {
        "task": "billing.tasks.notify_low_balances",
        "schedule": float(env("LOW_BALANCE_SWEEP_SECONDS", "300")),
    },
}

# --- REST API (/api/, the api app) ---------------------------------------------------------
# Personal access tokens (Authorization: Bearer slt-...) or the site's session (CSRF enforced);
# every endpoint needs one of them unless it says otherwise. README "The REST API".
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.AccessTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"redeem": env("API_REDEEM_RATE", "30/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sluice REST API",
    "DESCRIPTION": "Your keys, logs, balance, redemption codes, VIP tiers and prices. "
    "Money is in quota units: 500,000 = $1.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "KeyStatusEnum": "accounts.models.ApiKey.Status",
        "CallStatusEnum": "billing.models.UsageLog.Status",
    },
}
# Redemption codes: wrong guesses allowed per user and per client IP in this many seconds
# (counted in the default cache: Redis in production). billing.redemption.
REDEEM_FAILURES_PER_USER = int(env("REDEEM_FAILURES_PER_USER", "10"))
REDEEM_FAILURES_PER_IP = int(env("REDEEM_FAILURES_PER_IP", "30"))
REDEEM_FAILURE_WINDOW_SECONDS = int(env("REDEEM_FAILURE_WINDOW_SECONDS", "3600"))

# --- The rest -------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
# The site speaks English and Simplified Chinese: from the browser's Accept-Language, or the
# language the person picked (remembered in a cookie). Each part of the site keeps its own
# catalogue under locale/<part>/; Django merges them. Compiled .mo files are committed, so a
# fresh machine needs no gettext.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale" / part for part in ("site", "accounts", "logs")]
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise looks there first (empty until collectstatic)
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves the site's CSS and JS. Embedded mode (and any node where collectstatic was not
# run) serves them straight from the source folders; `manage.py collectstatic` copies them into
# STATIC_ROOT with compressed copies, and WHITENOISE_USE_FINDERS=0 then serves only those.
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # No manifest: pages render the same whether or not collectstatic ran.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Session and CSRF cookies: the session cookie is HttpOnly always; both are Secure (HTTPS only)
# by default in production mode (DATABASE_URL set), or whenever SESSION_COOKIE_SECURE=1.
# Embedded mode is often plain http on a LAN, so there the default is off.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", bool(env("DATABASE_URL")))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_SAMESITE = "Lax"
# The public address of the site ("https://api.example.com"), shown on the home and docs pages
# as the base URL; empty: taken from each request's host.
SITE_URL = env("SITE_URL").rstrip("/")

# Every line: timestamp, level, logger, the /v1 request id ("-" outside a call), message
# (config.logging). uvicorn's lines get it here once Django is loaded, and from scripts/serve's
# --log-config before (its supervisor's lines); Celery keeps its hands off the root logger.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"sluice": {"format": LOG_FORMAT}},
    "filters": {
        "redact": {"()": "config.logging.RedactSecrets"},
        "request_id": {"()": "config.logging.RequestId"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id", "redact"],
            "formatter": "sluice",
        },
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        # Not "uvicorn" itself: naming it would make uvicorn.access, its child, propagate to
        # it and so turn on the access log that --no-access-log turned off.
        "uvicorn.error": {"handlers": ["console"], "propagate": False, "level": "INFO"},
        "django.server": {"handlers": ["console"], "propagate": False, "filters": ["redact"]},
        # httpx names the upstream URL of every request at INFO: not for shared logs.
        "httpx": {"level": "WARNING"},
        "django.channels.server": {
            "handlers": ["console"],
            "propagate": False,
            "filters": ["redact"],
        },
    },
}
