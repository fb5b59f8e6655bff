#!/usr/bin/env bash
# Make sure the PostgreSQL (127.0.0.1:5432, trust auth, database "test") and Redis
# (127.0.0.1:6379) servers the test suite talks to are up.
#
# 1. Already listening: nothing to do.
# 2. Installed but stopped: start them (the same commands the python-svc machines use).
# 3. Not installed: install them from Debian's packages when running as root, configure
#    trust auth on loopback for PostgreSQL, and start them.
# Anything else is an error: the PostgreSQL and Redis tests never skip silently.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  as_root || { echo "services: $* missing and not root; install them or start the servers yourself" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null
}

start_postgres() {
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "services: installing PostgreSQL from Debian's packages" >&2
    apt_install postgresql
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "chw-gateway-tests" "$hba" 2>/dev/null; then
    # Loopback trust for the tests, as on the python-svc machines.
    sed -i '1i host all all 127.0.0.1/32 trust # chw-gateway-tests\nhost all all ::1/128 trust # chw-gateway-tests' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start
}

ensure_test_db() {
  for _ in $(seq 1 30); do port_open 5432 && break; sleep 1; done
  if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 \
      || su postgres -c "psql -c 'CREATE DATABASE test'" >/dev/null
  fi
}

start_redis() {
  command -v redis-server >/dev/null || { echo "services: installing Redis from Debian's packages" >&2; apt_install redis-server; }
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  local dir=/var/lib/redis log=/var/log/redis/ci.log
  [ -w "$dir" ] || { dir=$(mktemp -d); log="$dir/redis.log"; }
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir "$dir" --logfile "$log"
  for _ in $(seq 1 30); do port_open 6379 && return; sleep 0.5; done
  echo "services: Redis did not come up on 127.0.0.1:6379" >&2
  exit 1
}

port_open 5432 || start_postgres
ensure_test_db
port_open 6379 || start_redis
echo "services: PostgreSQL on 127.0.0.1:5432 (database test) and Redis on 127.0.0.1:6379 are up" >&2
