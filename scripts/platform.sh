#!/usr/bin/env bash
# The local adpipe platform: a Tansu broker and the schema registry, with topics and schemas
# applied. Used by `make up`, `make down` and `make status`.
#
#   scripts/platform.sh up|down|status|demo
#
# `demo` brings the platform up, starts every stage (bronze, silver, gold, rule-evaluator,
# notification-sender, audit-writer) with Redis dedupe and their state in PostgreSQL, feeds
# them from the connector's
# simulator and shows what flows until Ctrl-C, which stops the stages (`make down` stops
# the platform).
#
# Settings (environment):
#   ADPIPE_BROKER_PORT       broker port                      (default 9092)
#   ADPIPE_REGISTRY_PORT     schema registry port             (default 8081)
#   ADPIPE_BROKER_STORAGE    Tansu storage engine URL, e.g. sqlite://.local/tansu.db; anything
#                            but memory:// uses the durable build (scripts/install-tansu.sh
#                            --durable)                                      (default memory://tansu/)
#   ADPIPE_SKIP_SERVICE_CHECKS=1   do not require Redis and PostgreSQL
#   ADPIPE_DEMO_METRICS_PORT first of the demo stages' /metrics ports (default 9181)
#   ADPIPE_DEMO_DATABASE     the stages' PostgreSQL, a libpq connection string (default
#                            host=127.0.0.1 user=postgres dbname=postgres)
#   ADPIPE_DEMO_SCHEMA       the PostgreSQL schema the demo's stages keep their state in
#                            (default adpipe_demo); emptied whenever the demo starts a fresh
#                            in-memory broker, whose offsets start again at 0
#   ADPIPE_DEMO_SECONDS      stop the demo after this many seconds (default: run until Ctrl-C)
#   ADPIPE_RUN_DIR           pid files and logs (default .local/run)
#   ADPIPE_REGISTRY_DATA     the registry's state file (default .local/schema-registry/registry.json)
#   ADPIPE_DEMO_ORGS, ADPIPE_DEMO_DAYS, ADPIPE_DEMO_RATE   the simulated traffic
#                            (defaults 5 orgs, 14 days, 20 rows/s; the simulator repeats its
#                            reports, as connectors re-pull them, and bronze drops the repeats)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
run=${ADPIPE_RUN_DIR:-.local/run}
mkdir -p "$run"
registry_data=${ADPIPE_REGISTRY_DATA:-$root/.local/schema-registry/registry.json}

broker_port=${ADPIPE_BROKER_PORT:-9092}
registry_port=${ADPIPE_REGISTRY_PORT:-8081}
storage=${ADPIPE_BROKER_STORAGE:-memory://tansu/}
bootstrap=127.0.0.1:$broker_port
registry_url=http://127.0.0.1:$registry_port
ctl() { target/debug/pipelinectl --bootstrap-servers "$bootstrap" --schema-registry-url "$registry_url" "$@"; }

say() { printf '%s\n' "$*"; }
die() { printf 'platform: %s\n' "$*" >&2; exit 1; }

alive() { [[ -f $run/$1.pid ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

holder() { ss -ltnp "sport = :$1" 2>/dev/null | awk 'NR>1 {print $NF}' | head -n 1; }

check_port_free() {
  local name=$1 port=$2
  if alive "$name"; then return 0; fi
  if port_open "$port"; then
    die "port $port (for the $name) is taken by ${3:-$(holder "$port")}; stop it or set ADPIPE_${name^^}_PORT"
  fi
}

check_services() {
  [[ ${ADPIPE_SKIP_SERVICE_CHECKS:-0} == 1 ]] && return 0
  local missing=()
  port_open 5432 || missing+=("PostgreSQL on 127.0.0.1:5432 (start: pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start)")
  port_open 6379 || missing+=("Redis on 127.0.0.1:6379 (start: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no)")
  if ((${#missing[@]})); then
    printf 'platform: missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    die "the pipeline needs these; start them, or set ADPIPE_SKIP_SERVICE_CHECKS=1 for the broker and registry alone"
  fi
}

wait_for() { # name, seconds, command...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then
      die "$name exited; last lines of $run/$name.log:
$(tail -n 15 "$run/$name.log" 2>/dev/null)"
    fi
    ((SECONDS < deadline)) || die "$name not ready within ${secs}s; last lines of $run/$name.log:
$(tail -n 15 "$run/$name.log" 2>/dev/null)"
    sleep 0.2
  done
}

broker_ready() { ctl --timeout-secs 1 topics diff; [[ $? -ne 2 ]]; }
registry_ready() { (exec 3<>"/dev/tcp/127.0.0.1/$registry_port") 2>/dev/null && \
  python3 -c "import urllib.request,sys; urllib.request.urlopen('$registry_url/healthz', timeout=1)"; }

start() { # name, command...
  local name=$1; shift
  setsid "$@" >"$run/$name.log" 2>&1 < /dev/null &
  echo $! > "$run/$name.pid"
}

up() {
  scripts/install-tansu.sh
  check_services
  check_port_free broker "$broker_port"
  check_port_free registry "$registry_port"
  say "platform: building schema-registry and pipelinectl..."
  cargo build --quiet --bin schema-registry --bin pipelinectl

  if alive broker; then
    say "platform: broker already running (pid $(cat $run/broker.pid)) on $bootstrap"
  else
    local bin=.local/bin/tansu
    if [[ $storage != memory://* ]]; then
      bin=.local/bin/tansu-durable
      [[ -x $bin ]] || scripts/install-tansu.sh --durable
    fi
    start broker "$root/$bin" broker --listener-url "tcp://$bootstrap" \
      --advertised-listener-url "tcp://$bootstrap" --storage-engine "$storage"
    say "platform: broker starting on $bootstrap (storage $storage)"
    [[ $storage == memory://* ]] && fresh_broker=1
  fi
  if alive registry; then
    say "platform: schema registry already running (pid $(cat $run/registry.pid)) on $registry_url"
  else
    start registry "$root/target/debug/schema-registry" --listen "127.0.0.1:$registry_port" \
      --data-file "$registry_data"
    say "platform: schema registry starting on $registry_url"
  fi
  wait_for broker 60 broker_ready
  wait_for registry 30 registry_ready
  say "platform: applying topics..."
  ctl topics apply
  say "platform: registering schemas..."
  ctl schemas register
  say "platform: up — broker $bootstrap, schema registry $registry_url (logs in $run/)"
}

stop() { # name
  local name=$1
  if ! alive "$name"; then
    rm -f "$run/$name.pid"
    return 0
  fi
  local pid; pid=$(cat "$run/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    say "platform: $name (pid $pid) did not stop within 10 s; killed"
  else
    say "platform: $name (pid $pid) stopped"
  fi
  rm -f "$run/$name.pid"
}

down() {
  for name in connector "${demo_stages[@]}"; do stop "$name"; done
  stop registry
  stop broker
  say "platform: down"
}

status() {
  local rc=0
  for name in broker registry; do
    if alive "$name"; then
      say "$name: running (pid $(cat $run/$name.pid)), log $run/$name.log"
    else
      say "$name: not running"; rc=1
    fi
  done
  if alive broker && [[ -x target/debug/pipelinectl ]]; then
    say ""; say "topics ($bootstrap):"
    ctl topics diff || rc=1
  fi
  if alive registry && [[ -x target/debug/pipelinectl ]]; then
    say ""; say "schemas ($registry_url):"
    ctl schemas check || rc=1
  fi
  return $rc
}

demo_stages=(bronze silver gold rule-evaluator notification-sender audit-writer)
demo_port=${ADPIPE_DEMO_METRICS_PORT:-9181}
# Every stage keeps its tables (prefixed gold_, rules_, notify_, audit_) in one schema.
demo_database=${ADPIPE_DEMO_DATABASE:-host=127.0.0.1 user=postgres dbname=postgres}
demo_schema=${ADPIPE_DEMO_SCHEMA:-adpipe_demo}
database_url="$demo_database options='-c search_path=$demo_schema'"
fresh_broker=0

# The stages' state reflects the broker's offsets: a fresh in-memory broker starts them at 0
# again, so the state of an earlier run must go (or gold would take new records for replays).
demo_schema_ready() {
  command -v psql >/dev/null || die "the demo needs psql (Debian: apt-get install postgresql-client)"
  local sql="CREATE SCHEMA IF NOT EXISTS \"$demo_schema\""
  if ((fresh_broker)); then
    sql="DROP SCHEMA IF EXISTS \"$demo_schema\" CASCADE; $sql"
    say "demo: fresh broker, so a fresh state schema $demo_schema"
  fi
  psql "$demo_database" -q -v ON_ERROR_STOP=1 -c "$sql" >/dev/null
}

healthy() { python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$1/healthz', timeout=1)"; }

demo_stop() {
  for name in connector "${demo_stages[@]}"; do stop "$name"; done
  say "demo: stages stopped; the platform is still up (make down stops it)"
}

demo() {
  up
  demo_schema_ready
  say "demo: building the stages..."
  cargo build --quiet --bin connector $(printf -- '--bin %s ' "${demo_stages[@]}")
  local i=0 view=()
  for name in "${demo_stages[@]}"; do
    local port=$((demo_port + i)); i=$((i + 1))
    if ! alive "$name"; then
      port_open "$port" && die "port $port (for $name's metrics) is taken by $(holder "$port"); set ADPIPE_DEMO_METRICS_PORT"
      start "$name" env KAFKA_BOOTSTRAP_SERVERS="$bootstrap" SCHEMA_REGISTRY_URL="$registry_url" \
        REDIS_URL=redis://127.0.0.1:6379 METRICS_LISTEN="127.0.0.1:$port" LOG_FORMAT=json \
        RUN_REPORT_SECS=10 GOLD_FLUSH_INTERVAL_SECS=30 SHUTDOWN_GRACE_SECS=8 \
        GOLD_DATABASE_URL="$database_url" RULES_DATABASE_URL="$database_url" \
        NOTIFY_DATABASE_URL="$database_url" AUDIT_DATABASE_URL="$database_url" \
        "$root/target/debug/$name"
    fi
    view+=("$name=$port")
    wait_for "$name" 60 healthy "$port"
    say "demo: $name up (metrics on 127.0.0.1:$port, log $run/$name.log)"
  done
  if ! alive connector; then
    start connector env KAFKA_BOOTSTRAP_SERVERS="$bootstrap" SCHEMA_REGISTRY_URL="$registry_url" \
      "$root/target/debug/connector" --seed "$(date +%s)" --orgs "${ADPIPE_DEMO_ORGS:-5}" \
      --days "${ADPIPE_DEMO_DAYS:-14}" --rate "${ADPIPE_DEMO_RATE:-20}" --bad-share 0.05 \
      --passes 0 --progress-secs 5
    say "demo: connector simulating DV360, TTD, Meta and CRM reports (log $run/connector.log)"
  fi
  # Ctrl-C ends the view; then the stages are stopped once.
  trap ':' INT TERM
  DEMO_DATABASE="$database_url" python3 scripts/demo-view.py "${view[@]}" \
    ${ADPIPE_DEMO_SECONDS:+--seconds "$ADPIPE_DEMO_SECONDS"} || true
  trap - INT TERM
  demo_stop
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  demo) demo ;;
  *) die "usage: scripts/platform.sh up|down|status|demo" ;;
esac
