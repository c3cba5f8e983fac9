#!/usr/bin/env bash
# Prints a DATABASE_URL for a PostgreSQL the test suite can use:
#   1. $DATABASE_URL when set;
#   2. the server on 127.0.0.1:5432 (user postgres) when one answers
#      (IAAS_SHARED_PG_PORT changes the port);
#   3. otherwise a private throwaway server started from the installed binaries
#      (initdb + pg_ctl in var/pg-test), stopped by `scripts/ensure-postgres.sh --stop`.
# Fails, naming the package to install, when there are no PostgreSQL binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

private_dir=$PWD/var/pg-test
private_port=${IAAS_PRIVATE_PG_PORT:-55432}

find_bin() {
  local name=$1 candidate
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$candidate/$name" ]; then echo "$candidate/$name"; return 0; fi
  done
  return 1
}

runas=()
[ "$(id -u)" = 0 ] && runas=(runuser -u postgres --)  # PostgreSQL refuses to run as root

if [ "${1:-}" = "--stop" ]; then
  if [ -f "$private_dir/data/postmaster.pid" ]; then
    "${runas[@]}" "$(find_bin pg_ctl)" -D "$private_dir/data" -m fast stop >/dev/null
  fi
  exit 0
fi

if [ -n "${DATABASE_URL:-}" ]; then
  echo "$DATABASE_URL"
  exit 0
fi

answers() { # host port
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$1" -p "$2" -t 3
  else
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
  fi
}

shared_port=${IAAS_SHARED_PG_PORT:-5432}
if answers 127.0.0.1 "$shared_port"; then
  echo "postgres://postgres@127.0.0.1:$shared_port/iaas"
  exit 0
fi

initdb=$(find_bin initdb) || {
  echo "No PostgreSQL answers on 127.0.0.1:5432 and no PostgreSQL server binaries are installed." >&2
  echo "Install them (Debian: apt-get install postgresql) or set DATABASE_URL." >&2
  exit 1
}
pg_ctl=$(dirname "$initdb")/pg_ctl
mkdir -p "$private_dir"
if [ ! -f "$private_dir/data/PG_VERSION" ]; then
  echo "==> creating a private PostgreSQL in $private_dir" >&2
  [ "$(id -u)" = 0 ] && chown -R postgres "$private_dir"
  "${runas[@]}" "$initdb" -D "$private_dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if ! answers 127.0.0.1 "$private_port"; then
  echo "==> starting the private PostgreSQL on port $private_port" >&2
  "${runas[@]}" "$pg_ctl" -D "$private_dir/data" -l "$private_dir/server.log" -w \
    -o "-p $private_port -k $private_dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
fi
echo "postgres://postgres@127.0.0.1:$private_port/iaas"
