#!/usr/bin/env bash
# PostgreSQL from Debian's packages: a throwaway server on loopback, for tests and for running
# the ride store without Docker.
#
#   scripts/postgres.sh install     install Debian's postgresql when no server is installed
#   scripts/postgres.sh start       create and start a server, wait until it answers, and print
#                                   its URL as the last line
#   scripts/postgres.sh stop        stop it (a fast shutdown)
#   scripts/postgres.sh url         print the running server's URL
#
# Every command takes --dir DIR: where the server keeps its data, socket, log and port
# ($BIMRIDE_POSTGRES_DIR, default $TMPDIR/bimride-postgres, where the server's user can reach
# it). The log is DIR/postgres.log.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user that
# Debian's package creates.
set -euo pipefail

DIR="${BIMRIDE_POSTGRES_DIR:-${TMPDIR:-/tmp}/bimride-postgres}"
DATABASE=bimride

die() {
  echo "postgres.sh: $*" >&2
  exit 1
}

bindir() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [[ -n "$found" && -x "$found/pg_ctl" ]] || return 1
  echo "$found"
}

# Runs a server program as the user that owns the data.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

install() {
  bindir >/dev/null && return 0
  echo "installing postgresql from Debian"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  bindir >/dev/null || die "postgresql installed, but no pg_ctl under /usr/lib/postgresql"
}

url() {
  [[ -f "$DIR/port" ]] || die "no server in $DIR: run $0 start"
  echo "postgres://bimride:bimride@127.0.0.1:$(cat "$DIR/port")/$DATABASE"
}

start() {
  local bin port
  bin="$(bindir)" || die "PostgreSQL is not installed: run $0 install"
  [[ -f "$DIR/data/postmaster.pid" ]] && die "a server already runs in $DIR: run $0 stop"
  rm -rf "$DIR"
  mkdir -p "$DIR/data"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  echo "$port" >"$DIR/port"
  echo bimride >"$DIR/password"
  [[ $(id -u) -eq 0 ]] && chown -R postgres:postgres "$DIR"
  as_owner "$bin/initdb" -D "$DIR/data" -U bimride --pwfile="$DIR/password" \
    --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -5 "$DIR/initdb.log")"
  # Durability as in production: fsync stays on.
  as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c max_connections=200" start >/dev/null ||
    die "the server did not start: $(tail -5 "$DIR/postgres.log")"
  as_owner "$bin/createdb" -h "$DIR" -p "$port" -U bimride "$DATABASE"
  url
}

stop() {
  local bin
  bin="$(bindir)" || return 0
  [[ -f "$DIR/data/postmaster.pid" ]] || return 0
  as_owner "$bin/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null || true
}

cmd="${1:-}"
shift || true
while (($#)); do
  case "$1" in
  --dir)
    DIR="$2"
    shift 2
    ;;
  *) die "unknown option $1" ;;
  esac
done
case "$cmd" in
install) install ;;
start) start ;;
stop) stop ;;
url) url ;;
*) die "usage: $0 install|start|stop|url [--dir DIR]" ;;
esac
