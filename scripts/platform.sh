#!/usr/bin/env bash
# The local adpipe platform: a Tansu broker and the schema registry, with topics and schemas
# applied. Used by `make up`, `make down` and `make status`.
#
#   scripts/platform.sh up|down|status
#
# Settings (environment):
#   ADPIPE_BROKER_PORT       broker port                      (default 9092)
#   ADPIPE_REGISTRY_PORT     schema registry port             (default 8081)
#   ADPIPE_BROKER_STORAGE    Tansu storage engine URL, e.g. sqlite://.local/tansu.db; anything
#                            but memory:// uses the durable build (scripts/install-tansu.sh
#                            --durable)                                      (default memory://tansu/)
#   ADPIPE_SKIP_SERVICE_CHECKS=1   do not require Redis and PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
run=.local/run
mkdir -p "$run"

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
  fi
  if alive registry; then
    say "platform: schema registry already running (pid $(cat $run/registry.pid)) on $registry_url"
  else
    start registry "$root/target/debug/schema-registry" --listen "127.0.0.1:$registry_port" \
      --data-file "$root/.local/schema-registry/registry.json"
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

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: scripts/platform.sh up|down|status" ;;
esac
