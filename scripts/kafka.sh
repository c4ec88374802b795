#!/usr/bin/env bash
# Apache Kafka from Maven Central: a KRaft cluster of combined broker+controller nodes on
# loopback, for tests and for running BimRide without Docker.
#
#   scripts/kafka.sh install               resolve the pinned broker's jars once into the cache
#   scripts/kafka.sh start [--nodes N]     format and start N nodes (3 by default), wait until
#                                          every one has started, print the bootstrap servers
#   scripts/kafka.sh stop                  stop every node (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh bootstrap             print the running cluster's bootstrap servers
#   scripts/kafka.sh pid NODE              print a node's process id (for fault tests)
#   scripts/kafka.sh node-stop NODE        stop one node
#   scripts/kafka.sh node-start NODE       start a stopped node again, on its data and ports
#   scripts/kafka.sh controller            print the node id of the active KRaft controller
#   scripts/kafka.sh version               print the pinned Kafka version
#
# Every command takes --dir DIR: where the cluster keeps its data, logs, ports and PIDs
# ($BIMRIDE_KAFKA_DIR, default $BIMRIDE_CACHE/kafka-cluster). Node logs are DIR/logs/node-N.log.
# The jars live in $BIMRIDE_CACHE (default ~/.cache/bimride), outside the clone, so later runs
# and other clones reuse them. Broker settings: deploy/kafka/cluster.properties.
# KAFKA_HEAP_OPTS sets each node's JVM heap (default -Xms256m -Xmx512m).
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
POM="$HERE/deploy/kafka/pom.xml"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE="${BIMRIDE_CACHE:-$HOME/.cache/bimride}"
LIBS="$CACHE/kafka-$VERSION/libs"
DIR="${BIMRIDE_KAFKA_DIR:-$CACHE/kafka-cluster}"
NODES=3
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"

die() {
  echo "kafka.sh: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null || die "$1 is not installed: $2"
}

installed() {
  [[ -f "$LIBS/.complete" ]]
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

java_main() {
  # shellcheck disable=SC2086 # HEAP holds several options
  exec java $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/deploy/kafka/log4j2.properties" \
    -cp "$LIBS/*" "$@"
}

node_count() {
  [[ -f "$DIR/nodes" ]] || die "no cluster in $DIR: run $0 start"
  cat "$DIR/nodes"
}

broker_port() { cat "$DIR/node-$1/broker.port"; }

bootstrap() {
  local n count out=()
  count="$(node_count)"
  for n in $(seq 1 "$count"); do out+=("127.0.0.1:$(broker_port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

pid_of() {
  local file="$DIR/node-$1/pid"
  [[ -f "$file" ]] && kill -0 "$(cat "$file")" 2>/dev/null && cat "$file"
}

# Starts node $1 in the background, on the data and ports it was formatted with.
launch() {
  local n="$1" log="$DIR/logs/node-$1.log"
  [[ -z "$(pid_of "$n" || true)" ]] || die "node $n is already running"
  echo "--- start $(date -u +%FT%TZ)" >>"$log"
  # The subshell becomes the JVM, so $! is the node's own process id.
  (cd "$DIR" && java_main kafka.Kafka "$DIR/node-$n/server.properties") >>"$log" 2>&1 </dev/null &
  echo $! >"$DIR/node-$n/pid"
}

# Waits until node $1 logs that it has started (after it registered and was unfenced).
await_started() {
  local n="$1" log="$DIR/logs/node-$1.log" deadline=$((SECONDS + 120))
  local from
  from="$(grep -n -- '--- start' "$log" | tail -1 | cut -d: -f1)"
  # awk reads the whole log: `tail | grep -q` would fail under pipefail once grep exits early.
  until awk -v from="$from" 'NR >= from && /Kafka Server started/ { found = 1 } END { exit !found }' "$log"; do
    [[ -n "$(pid_of "$n" || true)" ]] || die "node $n exited while starting; see $log"
    ((SECONDS < deadline)) || die "node $n did not start within 120 s; see $log"
    sleep 0.2
  done
}

stop_node() {
  local n="$1" pid
  pid="$(pid_of "$n" || true)"
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/node-$n/pid"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/node-$n/pid"
}

cmd="${1:-}"
shift || true
args=()
while (($#)); do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --nodes) NODES="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- "${args[@]+"${args[@]}"}"

case "$cmd" in
  install)
    if installed; then
      echo "kafka $VERSION: cached at $LIBS"
    else
      need java "Apache Kafka runs on Java 17 or later"
      need mvn "Maven resolves the broker's jars from Maven Central"
      echo "kafka $VERSION: resolving jars from Maven Central into $LIBS"
      rm -rf "$LIBS"
      mkdir -p "$LIBS"
      mvn -q -B -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIBS"
      touch "$LIBS/.complete"
    fi
    ;;
  start)
    installed || die "kafka $VERSION is not installed: run $0 install"
    need java "Apache Kafka runs on Java 17 or later"
    [[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive number, got $NODES"
    if [[ -f "$DIR/nodes" ]]; then
      for n in $(seq 1 "$(cat "$DIR/nodes")"); do
        [[ -z "$(pid_of "$n" || true)" ]] || die "a cluster is already running in $DIR: run $0 stop"
      done
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR/logs"
    echo "$NODES" >"$DIR/nodes"
    voters=()
    for n in $(seq 1 "$NODES"); do
      mkdir -p "$DIR/node-$n"
      free_port >"$DIR/node-$n/broker.port"
      free_port >"$DIR/node-$n/controller.port"
      voters+=("$n@127.0.0.1:$(cat "$DIR/node-$n/controller.port")")
    done
    quorum="$(IFS=,; echo "${voters[*]}")"
    # A cluster smaller than the compose file's replication keeps its settings within reach.
    rf=$((NODES < 3 ? NODES : 3))
    isr=$((rf < 2 ? 1 : 2))
    for n in $(seq 1 "$NODES"); do
      bp="$(broker_port "$n")"
      cp="$(cat "$DIR/node-$n/controller.port")"
      {
        sed -e "s/^\(default.replication.factor\|offsets.topic.replication.factor\|transaction.state.log.replication.factor\)=.*/\1=$rf/" \
          -e "s/^\(min.insync.replicas\|transaction.state.log.min.isr\)=.*/\1=$isr/" \
          "$HERE/deploy/kafka/cluster.properties"
        echo "node.id=$n"
        echo "listeners=PLAINTEXT://127.0.0.1:$bp,CONTROLLER://127.0.0.1:$cp"
        echo "advertised.listeners=PLAINTEXT://127.0.0.1:$bp"
        echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        echo "controller.quorum.voters=$quorum"
        echo "log.dirs=$DIR/node-$n/data"
      } >"$DIR/node-$n/server.properties"
    done
    cluster_id="$(python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
    for n in $(seq 1 "$NODES"); do
      (java_main kafka.tools.StorageTool format --ignore-formatted \
        -t "$cluster_id" -c "$DIR/node-$n/server.properties") >>"$DIR/logs/format.log" 2>&1 &
    done
    for job in $(jobs -p); do
      wait "$job" || die "formatting storage failed; see $DIR/logs/format.log"
    done
    for n in $(seq 1 "$NODES"); do launch "$n"; done
    for n in $(seq 1 "$NODES"); do await_started "$n"; done
    echo "kafka $VERSION: $NODES nodes running in $DIR (logs in $DIR/logs)" >&2
    bootstrap
    ;;
  stop)
    [[ -f "$DIR/nodes" ]] || exit 0
    count="$(node_count)"
    for n in $(seq 1 "$count"); do stop_node "$n" & done
    wait
    ;;
  bootstrap)
    bootstrap
    ;;
  pid)
    [[ $# -eq 1 ]] || die "usage: $0 pid NODE"
    pid_of "$1" || die "node $1 is not running"
    ;;
  node-stop)
    [[ $# -eq 1 ]] || die "usage: $0 node-stop NODE"
    stop_node "$1"
    ;;
  node-start)
    [[ $# -eq 1 ]] || die "usage: $0 node-start NODE"
    [[ -f "$DIR/node-$1/server.properties" ]] || die "no node $1 in $DIR"
    launch "$1"
    await_started "$1"
    ;;
  controller)
    (java_main org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$(bootstrap)" \
      describe --status) 2>/dev/null | sed -n 's/^LeaderId:[[:space:]]*//p'
    ;;
  version)
    echo "$VERSION"
    ;;
  *)
    sed -n '2,22p' "$0"
    exit 2
    ;;
esac
