#!/usr/bin/env bash
# tansu: a Kafka-compatible broker used by the tests as a separate process.
#
#   scripts/tansu.sh install        build tansu 0.6.0 once into the cache (about 9 minutes)
#   scripts/tansu.sh path           print the binary's path
#   scripts/tansu.sh start [PORT]   start a broker on 127.0.0.1:PORT (a free port if none),
#                                   print its bootstrap address
#   scripts/tansu.sh stop           stop the broker started by `start`
#
# The cache lives outside the clone ($BIMRIDE_CACHE, default ~/.cache/bimride) so that later
# runs and other clones reuse it.
set -euo pipefail

VERSION=0.6.0
CACHE="${BIMRIDE_CACHE:-$HOME/.cache/bimride}"
ROOT="$CACHE/tansu-$VERSION"
BIN="$ROOT/bin/tansu"
PIDFILE="$CACHE/tansu.pid"

installed() {
  [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

case "${1:-}" in
  install)
    if installed; then
      echo "tansu $VERSION: cached at $BIN"
    else
      mkdir -p "$ROOT"
      echo "tansu $VERSION: building into $ROOT (once; about 9 minutes on 2 cores)"
      cargo install tansu --version "$VERSION" --locked \
        --no-default-features --features dynostore --root "$ROOT"
    fi
    ;;
  path)
    echo "$BIN"
    ;;
  start)
    installed || { echo "tansu is not installed: run $0 install" >&2; exit 1; }
    port="${2:-$(free_port)}"
    url="tcp://127.0.0.1:$port"
    mkdir -p "$CACHE"
    nohup "$BIN" broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine memory://tansu/ >"$CACHE/tansu-$port.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 200); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "127.0.0.1:$port"
        exit 0
      fi
      sleep 0.1
    done
    echo "tansu did not start; see $CACHE/tansu-$port.log" >&2
    exit 1
    ;;
  stop)
    if [[ -f "$PIDFILE" ]]; then
      kill "$(cat "$PIDFILE")" 2>/dev/null || true
      rm -f "$PIDFILE"
    fi
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
