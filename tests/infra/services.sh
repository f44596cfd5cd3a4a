#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis for `make test`, on loopback ports of their own.
#   services.sh start   installs the Debian packages when missing (as root), starts both, prints env
#   services.sh stop    stops both and removes their data
# State lives under $SERVICES_DIR (default /tmp/charstudio-test-services) so a clean clone, CI and a
# developer machine all behave the same.
set -euo pipefail

SERVICES_DIR=${SERVICES_DIR:-/tmp/charstudio-test-services}
PG_PORT=${TEST_PG_PORT:-54329}
REDIS_PORT=${TEST_REDIS_PORT:-63799}
PG_DIR=$SERVICES_DIR/pg
REDIS_DIR=$SERVICES_DIR/redis

log() { echo "[services] $*" >&2; }

as_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
  if ! as_root; then
    log "missing $*: install them (Debian packages) or run as root"; exit 1
  fi
  if [ -z "${_APT_UPDATED:-}" ]; then
    log "apt-get update"; apt-get update -qq >/dev/null; _APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  echo "$dir"
}

# Run a PostgreSQL server binary as a user it accepts: initdb and postgres refuse to run as root.
pg_run() {
  if as_root; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_packages() {
  local missing=()
  [ -n "$(pg_bin)" ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  if [ "${WITH_BROWSER:-1}" = 1 ] && [ ! -x /usr/bin/chromium ]; then missing+=(chromium fonts-dejavu-core); fi
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

start_pg() {
  local bin; bin=$(pg_bin)
  if pg_run "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; then
    log "postgresql already up on $PG_PORT"; return
  fi
  rm -rf "$PG_DIR"; mkdir -p "$PG_DIR"
  if as_root; then chown postgres:postgres "$PG_DIR"; fi
  pg_run "$bin/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  # fsync off: a throwaway test cluster trades durability for speed.
  pg_run "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null
  pg_run "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres charstudio
  log "postgresql up on 127.0.0.1:$PG_PORT"
}

start_redis() {
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "redis already up on $REDIS_PORT"; return
  fi
  rm -rf "$REDIS_DIR"; mkdir -p "$REDIS_DIR"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
    --dir "$REDIS_DIR" --logfile "$REDIS_DIR/log" --pidfile "$REDIS_DIR/pid" --maxmemory-policy noeviction
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  log "redis up on 127.0.0.1:$REDIS_PORT"
}

stop_all() {
  local bin; bin=$(pg_bin)
  if [ -n "$bin" ] && [ -d "$PG_DIR/data" ]; then
    pg_run "$bin/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$SERVICES_DIR"
}

case "${1:-}" in
  start)
    ensure_packages
    start_pg
    start_redis
    ;;
  stop) stop_all ;;
  env)
    echo "DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/charstudio"
    echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    echo "CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/1"
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
