#!/usr/bin/env bash
# Apache Kafka 4.x (KRaft, one combined broker+controller) on 127.0.0.1, for tests and local runs.
#
#   deploy/local/kafka.sh fetch    resolve the broker jars from Maven Central into the cache (once)
#   deploy/local/kafka.sh start    format storage, start the broker on a free port, wait for metadata;
#                                  prints the bootstrap address (also written to $RUN_DIR/bootstrap);
#                                  with KAFKA_REUSE=1, restart the stopped broker of $RUN_DIR instead:
#                                  same config, port and data, no reformat (fails if there is none)
#   deploy/local/kafka.sh stop     stop it cleanly (SIGTERM, then SIGKILL after 30 s)
#   deploy/local/kafka.sh status   print the bootstrap address if it is running, exit 1 if not
#
# Environment: INFERWATCH_CACHE (default ~/.cache/inferwatch) holds the jars;
# KAFKA_RUN_DIR (default $INFERWATCH_CACHE/kafka-run) holds config, data, pid and logs of one broker;
# KAFKA_PORT picks the port (default: a free one); KAFKA_HEAP (default 512m).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
cache=${INFERWATCH_CACHE:-$HOME/.cache/inferwatch}
libs=$cache/kafka-$kafka_version/libs
run_dir=${KAFKA_RUN_DIR:-$cache/kafka-run}
java=${JAVA:-java}

log() { echo "kafka.sh: $*" >&2; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found: install Maven (apt-get install maven)"; exit 1; }
  log "resolving Apache Kafka $kafka_version jars from Maven Central into $libs"
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime >&2
  ls "$libs"/kafka_2.13-"$kafka_version".jar >/dev/null
  touch "$libs/.complete"
}

running_pid() {
  [ -f "$run_dir/pid" ] || return 1
  local pid; pid=$(cat "$run_dir/pid")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

jrun() { "$java" -Xms128m -Xmx"${KAFKA_HEAP:-512m}" -cp "$libs/*" \
  -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$run_dir" "$@"; }

start() {
  if pid=$(running_pid); then
    log "already running (pid $pid) at $(cat "$run_dir/bootstrap")"
    cat "$run_dir/bootstrap"; return 0
  fi
  fetch
  local port
  if [ "${KAFKA_REUSE:-0}" = 1 ]; then
    port=$(sed -n 's|^listeners=PLAINTEXT://127.0.0.1:\([0-9]*\),.*|\1|p' "$run_dir/server.properties" 2>/dev/null || true)
    if [ -z "$port" ] || [ ! -f "$run_dir/data/meta.properties" ]; then
      log "KAFKA_REUSE=1 but $run_dir holds no formatted broker to restart"; exit 1
    fi
    log "restarting the broker of $run_dir (port $port, existing data)"
  else
    start_fresh
    port=$(cat "$run_dir/port")
  fi
  launch "$port"
}

start_fresh() {
  rm -rf "$run_dir" && mkdir -p "$run_dir/data"
  local port=${KAFKA_PORT:-$(free_port)} cport; cport=$(free_port)
  echo "$port" > "$run_dir/port"
  cat > "$run_dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$run_dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
  local cluster_id; cluster_id=$(jrun kafka.tools.StorageTool random-uuid)
  jrun kafka.tools.StorageTool format -t "$cluster_id" -c "$run_dir/server.properties" >"$run_dir/format.log" 2>&1 \
    || { log "storage format failed:"; cat "$run_dir/format.log" >&2; exit 1; }
}

launch() {
  local port=$1
  nohup "$java" -Xms128m -Xmx"${KAFKA_HEAP:-512m}" -XX:+UseG1GC -cp "$libs/*" \
    -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$run_dir" \
    kafka.Kafka "$run_dir/server.properties" >>"$run_dir/stdout.log" 2>&1 &
  echo $! > "$run_dir/pid"
  echo "127.0.0.1:$port" > "$run_dir/bootstrap"
  log "started pid $! on 127.0.0.1:$port; waiting for metadata"
  # Ready means a client gets a metadata response naming this broker, not merely an open port.
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90}))
  until python3 "$here/kafka_ready.py" "127.0.0.1:$port" 2>/dev/null; do
    if ! running_pid >/dev/null; then
      log "broker exited during start; last log lines:"; tail -n 40 "$run_dir/stdout.log" "$run_dir/broker.log" >&2 || true
      exit 1
    fi
    if [ $SECONDS -ge $deadline ]; then log "no metadata response after ${KAFKA_START_TIMEOUT:-90} s"; stop; exit 1; fi
    sleep 0.5
  done
  log "ready at 127.0.0.1:$port"
  echo "127.0.0.1:$port"
}

stop() {
  local pid
  if ! pid=$(running_pid); then log "not running"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || { log "stopped pid $pid"; rm -f "$run_dir/pid"; return 0; }; sleep 0.5; done
  log "pid $pid ignored SIGTERM for 30 s; killing"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$run_dir/pid"
}

status() {
  if running_pid >/dev/null; then cat "$run_dir/bootstrap"; else log "not running"; return 1; fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
