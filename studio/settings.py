"""Settings for Character Studio, read from the environment only.

The defaults run the whole studio on one machine with no servers: SQLite and media under var/,
and a Celery broker on kombu's filesystem transport. Production and `make test` point
DATABASE_URL, REDIS_URL and CELERY_BROKER_URL at PostgreSQL and Redis.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from studio.env import env_bool, env_float, env_int, env_int_suffixed, env_list, env_pair, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-never-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "csp",
    "django_htmx",
    "template_partials",
    "models_registry",
    "generation",
    "studio",
]

MIDDLEWARE = [
    # First, so it sees the response last: streamed files read a chunk at a time under ASGI.
    "studio.middleware.async_streams",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a login unless its view opts out with @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Cache-Control: private on logged-in pages, and a Permissions-Policy on every response.
    "studio.middleware.security_headers",
    # Last, as django-axes asks: it turns a login refused during a lockout into the login page
    # with the lockout message (settings.AXES_LOCKOUT_CALLABLE).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "studio.urls"
WSGI_APPLICATION = "studio.wsgi.application"
ASGI_APPLICATION = "studio.asgi.application"

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
                "studio.context_processors.batch_notifications",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        # A worker that outlives a PostgreSQL restart must not reuse a dead connection.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server and the Celery worker write to the same file: wait for the lock instead of
    # failing at once, and take it at BEGIN so two writers never deadlock on an upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (rate limits and provider health are shared across processes through it) ---------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX"),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "studio:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media -----------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# Media is never served from a public URL: views check ownership and then stream the file or
# redirect to a short-lived presigned URL.
MEDIA_URL = "/media-private/"

AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "access_key": env_secret("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_secret("AWS_SECRET_ACCESS_KEY") or None,
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": env_int("AWS_QUERYSTRING_EXPIRE", 600),
            "signature_version": "s3v4",
            "file_overwrite": False,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Uploads: Django's memory settings are not caps, so the form enforces UPLOAD_MAX_BYTES itself.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 15 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 4096 * 4096)
DOWNLOAD_MAX_BYTES = env_int("DOWNLOAD_MAX_BYTES", 25 * 1024 * 1024)

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
# Redis redelivers any unacked message after this many seconds, and ETA/countdown tasks longer
# than it run again and again; every delay in the pipeline stays well below it.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
if CELERY_BROKER_URL.startswith("filesystem"):
    # kombu's own filesystem transport can hand a reader a half-written message (studio/broker.py).
    CELERY_BROKER_TRANSPORT = "studio.broker:Transport"
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcast (control) messages too, or kombu writes them to ./control.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The transport's 1 s default would add up to a second to every hop of the pipeline.
        "polling_interval": env_float("CELERY_FS_POLLING_INTERVAL", 0.05),
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection before and after each task unless this is
# set: a fresh PostgreSQL connection per step cost a third of the machine's CPU under load. With it,
# a worker thread keeps its connection; studio/celery.py still drops one that died or outlived
# DB_CONN_MAX_AGE around each task, and CONN_HEALTH_CHECKS replaces a dropped one before use.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
# Off: the worker runs a threads pool, which cannot cancel a running task, and celery 5.6 lets
# the NotImplementedError end the worker on every broker connection loss. A task left running
# may be delivered again after the visibility timeout; every task is idempotent.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_DEFAULT_QUEUE", "studio")
# Image work (a poll or webhook that downloads, decodes, thumbnails and stores a provider's images)
# goes to the default queue's name plus this (generation.enqueue.IMAGE_TASKS), so it never holds up
# dispatch on a worker that consumes only the default queue (the Procfile's `worker` and
# `worker-images`). A worker started without --queues consumes both.
IMAGE_QUEUE_SUFFIX = "-images"
CELERY_TASK_QUEUES = [
    Queue(CELERY_TASK_DEFAULT_QUEUE, routing_key=CELERY_TASK_DEFAULT_QUEUE),
    Queue(CELERY_TASK_DEFAULT_QUEUE + IMAGE_QUEUE_SUFFIX, routing_key=CELERY_TASK_DEFAULT_QUEUE + IMAGE_QUEUE_SUFFIX),
]
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The local GPU worker's batches run only on the worker that consumes this queue (Procfile worker-gpu).
GPU_QUEUE = env_str("GPU_QUEUE", "gpu")
CELERY_TASK_ROUTES = {"generation.tasks.gpu_batch_task": {"queue": GPU_QUEUE}}
# Stopping a worker. SIGTERM (a deploy, a scale-down) is Celery's warm shutdown: the worker stops
# taking messages, hands back at once those it holds for later (countdowns) and finishes the tasks
# it runs; what a SIGKILL cuts stays unacknowledged (acks_late) and the sweeper sends it again.
# The soft shutdown (celery 5.5+) bounds the cold one instead (SIGQUIT, a second Ctrl-C): running
# tasks get this many seconds before it cancels them, which the threads pool cannot do (celery
# raises NotImplementedError), so never remap SIGTERM to it (REMAP_SIGTERM). Not on idle: the
# Redis transport hands back the held messages without waiting.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 30.0)
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = env_bool("CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE", False)

# --- Providers (keys only from the environment) ---------------------------------------------
FAL_KEY = env_secret("FAL_KEY")
REPLICATE_API_TOKEN = env_secret("REPLICATE_API_TOKEN")
GEMINI_API_KEY = env_secret("GEMINI_API_KEY")
COMFYUI_BASE_URL = env_str("COMFYUI_BASE_URL")
# The local GPU worker (Procfile worker-gpu): a diffusers SDXL folder or a single .safetensors file
# it loads at start. Set on the web too, the local model is offered while no GPU worker beats (and
# then routed around); unset there, it is offered only while one does.
LOCAL_SDXL_MODEL = env_str("LOCAL_SDXL_MODEL")
# For a single-file LOCAL_SDXL_MODEL: a diffusers folder of SDXL's configs (no weights needed), so
# loading never reaches a hub.
LOCAL_SDXL_CONFIG = env_str("LOCAL_SDXL_CONFIG")
# How long a local request may wait for the GPU before it moves to the next model of the chain.
LOCAL_GPU_MAX_WAIT_SECONDS = env_float("LOCAL_GPU_MAX_WAIT_SECONDS", 90.0)
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL")
# Webhooks (asked for only when PUBLIC_BASE_URL is set): Replicate's signing secret is the
# "whsec_..." key of GET /v1/webhooks/default/secret; fal signs with keys from its JWKS.
REPLICATE_WEBHOOK_SECRET = env_secret("REPLICATE_WEBHOOK_SECRET")
FAL_WEBHOOK_JWKS_URL = env_str("FAL_WEBHOOK_JWKS_URL", "https://rest.fal.ai/.well-known/jwks.json")
# Seconds a web worker may wait on the JWKS while checking a delivery (a failure is cached a minute).
FAL_WEBHOOK_JWKS_TIMEOUT = env_float("FAL_WEBHOOK_JWKS_TIMEOUT", 3.0)
FAL_USER_ID = env_str("FAL_USER_ID")
WEBHOOK_TOLERANCE_SECONDS = env_int("WEBHOOK_TOLERANCE_SECONDS", 300)
# API base URLs are settings so tests can point the real adapters at the loopback simulator.
FAL_QUEUE_URL = env_str("FAL_QUEUE_URL", "https://queue.fal.run")
# fal's REST host, where a LoRA training's dataset ZIP is uploaded (docs/providers.md §7.2), and the
# storage_type its upload asks for.
FAL_REST_URL = env_str("FAL_REST_URL", "https://rest.fal.ai")
FAL_STORAGE_TYPE = env_str("FAL_STORAGE_TYPE", "fal-cdn-v3")
REPLICATE_API_URL = env_str("REPLICATE_API_URL", "https://api.replicate.com")
# The Replicate user or organisation (the token's) that owns the models LoRA trainings write into.
REPLICATE_TRAINING_OWNER = env_str("REPLICATE_TRAINING_OWNER")
GEMINI_API_URL = env_str("GEMINI_API_URL", "https://generativelanguage.googleapis.com")
GEMINI_API_VERSION = env_str("GEMINI_API_VERSION", "v1beta")
# Gemini Batch Mode (generation/providers/gemini_batch.py): requests go inline below this size, else
# as an uploaded JSONL file, sent in chunks of GEMINI_BATCH_UPLOAD_CHUNK_BYTES (multiples of 256 KiB).
GEMINI_BATCH_INLINE_LIMIT_BYTES = env_int("GEMINI_BATCH_INLINE_LIMIT_BYTES", 20 * 1024 * 1024)
GEMINI_BATCH_UPLOAD_CHUNK_BYTES = env_int("GEMINI_BATCH_UPLOAD_CHUNK_BYTES", 8 * 1024 * 1024)
PROVIDER_CONNECT_TIMEOUT = env_float("PROVIDER_CONNECT_TIMEOUT", 5.0)
PROVIDER_READ_TIMEOUT = env_float("PROVIDER_READ_TIMEOUT", 60.0)
# Hosts (host or host:port) that staff configured and so may be fetched even on private or
# loopback addresses: a ComfyUI server, the test simulator. Everything else that a user or a
# provider response names goes through the public-address checks in generation.lib.http.
TRUSTED_FETCH_HOSTS = env_list("TRUSTED_FETCH_HOSTS")

# How many calls to one provider may be in flight at once across all workers, and how many may
# start per second; a 429 also pauses the provider for its Retry-After. The defaults are each
# provider's row in generation/providers/kinds.py; these hold only what the environment overrides,
# by kind: <KIND>_CONCURRENCY and <KIND>_RATE_PER_SECOND, e.g. FAL_CONCURRENCY=3.
# The Procfile's process counts share the suffix and are not providers.
PROVIDER_CONCURRENCY = env_int_suffixed("_CONCURRENCY", besides=frozenset({"WEB_CONCURRENCY", "WORKER_CONCURRENCY"}))
PROVIDER_RATE_PER_SECOND = env_int_suffixed("_RATE_PER_SECOND")
# Pipeline timing. Every countdown stays far below CELERY_VISIBILITY_TIMEOUT: a longer one makes the
# Redis broker deliver the task again and again.
PIPELINE_MAX_COUNTDOWN = min(30, CELERY_VISIBILITY_TIMEOUT // 4)
PIPELINE_MAX_ATTEMPTS = env_int("PIPELINE_MAX_ATTEMPTS", 4)
PIPELINE_RETRY_BASE_SECONDS = env_float("PIPELINE_RETRY_BASE_SECONDS", 1.0)
JOB_DEADLINE_SECONDS = env_int("JOB_DEADLINE_SECONDS", 15 * 60)
# A restart or a killed worker costs seconds: the sweeper finds lost work within about
# SWEEP_INTERVAL_SECONDS + SWEEP_GRACE_SECONDS (a step overdue by the grace is re-driven).
SWEEP_INTERVAL_SECONDS = env_int("SWEEP_INTERVAL_SECONDS", 15)
SWEEP_GRACE_SECONDS = env_int("SWEEP_GRACE_SECONDS", 10)
SWEEP_STALE_SECONDS = env_int("SWEEP_STALE_SECONDS", 30)
# A queue API submit whose answer was lost is never sent again; when it carried a webhook, the
# delivery (which names our request) may still bring it back for this long before it fails.
LOST_SUBMIT_WEBHOOK_WAIT_SECONDS = env_int("LOST_SUBMIT_WEBHOOK_WAIT_SECONDS", 120)

# The offline engine: latency and failure rate so progress, partial failure and retry can be
# seen with no network.
OFFLINE_LATENCY_SECONDS = env_float("OFFLINE_LATENCY_SECONDS", 1.0)
OFFLINE_FAILURE_RATE = env_float("OFFLINE_FAILURE_RATE", 0.0)
# Per image, by batch index (e.g. "1,2,3,4"): a request takes its slowest image's latency, so a
# fanned-out batch (max_images 1) shows its images one by one. Unset: OFFLINE_LATENCY_SECONDS.
try:
    OFFLINE_IMAGE_LATENCIES = [float(item) for item in env_list("OFFLINE_IMAGE_LATENCIES")]
except ValueError as exc:
    raise ImproperlyConfigured("OFFLINE_IMAGE_LATENCIES must be numbers separated by commas") from exc

# Batch Mode (generation/services/batches.py). A draft is sent when it holds this many images or
# is this old; staff set both. A sent batch is polled every BATCH_POLL_MIN_SECONDS at first, then
# less often as it ages (a tenth of its age), up to BATCH_POLL_MAX_SECONDS; beat looks for due
# work every BATCH_SWEEP_SECONDS. A create whose answer was lost is looked up by name after
# BATCH_LOST_CREATE_GRACE_SECONDS (longer than a create can take), and on every sweep after that
# until BATCH_LOST_CREATE_GIVE_UP_SECONDS, when its images fail: it is never sent again.
BATCH_AUTO_SUBMIT_REQUESTS = env_int("BATCH_AUTO_SUBMIT_REQUESTS", 50)
BATCH_AUTO_SUBMIT_MINUTES = env_int("BATCH_AUTO_SUBMIT_MINUTES", 30)
BATCH_POLL_MIN_SECONDS = env_float("BATCH_POLL_MIN_SECONDS", 5.0)
BATCH_POLL_MAX_SECONDS = env_float("BATCH_POLL_MAX_SECONDS", 600.0)
BATCH_SWEEP_SECONDS = env_int("BATCH_SWEEP_SECONDS", 10)
BATCH_LOST_CREATE_GRACE_SECONDS = env_int("BATCH_LOST_CREATE_GRACE_SECONDS", 90)
BATCH_LOST_CREATE_GIVE_UP_SECONDS = env_int("BATCH_LOST_CREATE_GIVE_UP_SECONDS", 600)

CELERY_BEAT_SCHEDULE = {
    # Re-drives jobs whose messages were lost or whose worker died (the broker only returns those
    # after its visibility timeout), and fails jobs past their deadline with a clear error.
    "sweep-stale-jobs": {"task": "generation.tasks.jobs_sweep_task", "schedule": float(SWEEP_INTERVAL_SECONDS)},
    # Batch Mode's poller: sends drafts due, polls sent batches when due, finds lost creates.
    "sweep-batches": {"task": "generation.tasks.batches_sweep_task", "schedule": float(BATCH_SWEEP_SECONDS)},
}

# --- Metrics (studio/metrics.py, generation/events.py) ------------------------------------------
# The bearer token a Prometheus scraper sends to GET /metrics; unset, /metrics answers 404.
METRICS_TOKEN = env_secret("METRICS_TOKEN")
# A worker serves its own metrics on this port (no token: keep it on the private network); 0: none.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)
WORKER_METRICS_ADDR = env_str("WORKER_METRICS_ADDR", "0.0.0.0")  # noqa: S104

# --- Credits --------------------------------------------------------------------------------
STARTING_CREDITS = env_int("STARTING_CREDITS", 100)

# --- Per-user rate limits (studio/throttle.py) ----------------------------------------------
# How many of each action one user may start per minute, counted in the shared cache; 0 turns a
# limit off. Credits already bound what a user spends: these hold back floods of requests.
USER_RATE_LIMITS = {
    "job": env_int("JOBS_PER_MINUTE", 60),
    "upload": env_int("UPLOADS_PER_MINUTE", 30),
}

# --- Login throttling (django-axes) ---------------------------------------------------------
# LOGIN_FAILURE_LIMIT failed logins from one address, or for one username, lock the studio and
# the admin login alike until LOGIN_COOLOFF_MINUTES after the last failure; the login page says so.
# A successful login does not reset the count (axes' AXES_RESET_ON_SUCCESS stays off): otherwise
# anyone with an account could clear their address's failures between guesses at another's.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_LOCKOUT_CALLABLE = "studio.throttle.login_locked_out"
AXES_CLIENT_IP_CALLABLE = "studio.throttle.client_ip"

# --- Security -------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Behind a proxy that terminates TLS: the header it sets (and strips from clients) to say the
# browser used https, e.g. "HTTP_X_FORWARDED_PROTO,https". Without it Django takes every request
# for plain http, and SECURE_SSL_REDIRECT would redirect for ever.
SECURE_PROXY_SSL_HEADER = env_pair("SECURE_PROXY_SSL_HEADER")
# How many proxies of ours stand in front of Django, each appending to X-Forwarded-For; 0: clients
# connect directly and REMOTE_ADDR is theirs (studio.throttle.client_ip, the login lockout's address).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
if not DEBUG:
    # Only in production: `make run` (DEBUG on) serves plain http on 127.0.0.1.
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Load balancers, orchestrators and Prometheus reach these over plain http, behind the TLS proxy.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# Content-Security-Policy (django-csp): nothing inline anywhere (no <script> or <style> blocks, no
# style= or on* attributes) and no eval; htmx runs with allowEval off and without the <style> it
# would inject (templates/base.html). Images also load from where presigned media URLs point.
CSP_MEDIA_HOSTS = env_list("CSP_MEDIA_HOSTS")
if AWS_STORAGE_BUCKET_NAME and not CSP_MEDIA_HOSTS:
    _endpoint = urlsplit(env_str("AWS_S3_ENDPOINT_URL"))
    if _endpoint.netloc:
        # A custom endpoint (MinIO, R2, ...) gets path-style URLs: <endpoint>/<bucket>/<key>.
        CSP_MEDIA_HOSTS = [f"{_endpoint.scheme}://{_endpoint.netloc}"]
    else:
        # AWS: <bucket>.s3.amazonaws.com, which redirects to the regional name for some buckets.
        _region = env_str("AWS_S3_REGION_NAME")
        CSP_MEDIA_HOSTS = [f"https://{AWS_STORAGE_BUCKET_NAME}.s3.amazonaws.com"]
        if _region:
            CSP_MEDIA_HOSTS.append(f"https://{AWS_STORAGE_BUCKET_NAME}.s3.{_region}.amazonaws.com")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "blob:", *CSP_MEDIA_HOSTS],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# LOG_FORMAT=json: one JSON object a line, with a pipeline event's fields (studio/log_format.py);
# the default, text, stays readable in a terminal.
LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "studio.log_format.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # axes logs every login and its start-up at INFO; its lockouts are warnings.
    "loggers": {"django.db.backends": {"level": "INFO"}, "axes": {"level": "WARNING"}},
}
