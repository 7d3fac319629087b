#!/usr/bin/env bash
# A multi-host Litmus on one machine, built from Linux network namespaces (docs/DEPLOYMENT.md):
#
#   ltc-db1  10.77.0.11  PostgreSQL primary (synchronous_standby_names = 'db2')
#   ltc-db2  10.77.0.12  PostgreSQL synchronous standby (pg_basebackup, streaming)
#   ltc-app1..N  10.77.0.21..  `python -m litmus serve`, DATABASE_URL naming both servers with
#                              target_session_attrs=read-write
#   ltc-lb   10.77.0.2   HAProxy on :8080, /readyz health checks
#   ltc-cli  10.77.0.100 where clients (tests, loadtests/bench_cluster.py) run
#
# Each "host" is a namespace with a veth pair to a bridge that lives in its own namespace
# (ltc-sw), so the addresses exist only inside the namespaces this script makes.
#
#   scripts/cluster.sh up [NODES]     build it (NODES Litmus nodes, 1-3, default 3)
#   scripts/cluster.sh status         what runs, who is primary, replication state
#   scripts/cluster.sh failover [--isolate] [S]
#                                     SIGKILL the primary's processes (--isolate: take its host
#                                     off the network first), wait S seconds (default 0:
#                                     detection time), promote the standby
#   scripts/cluster.sh kill-node N    SIGKILL Litmus node N
#   scripts/cluster.sh down           remove everything `up` made
#   scripts/cluster.sh exec CMD...    run CMD in the client namespace (ltc-cli)
#
# Environment: LITMUS_CLUSTER_DIR (state, default /tmp/litmus-cluster), LITMUS_PYTHON (default
# the checkout's .venv), PG_BIN (default Debian's PostgreSQL 15), LITMUS_CLUSTER_ENV (extra
# VAR=value words for the Litmus nodes). Needs root: namespaces, veth and bridges are root's.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${LITMUS_CLUSTER_DIR:-/tmp/litmus-cluster}"
PY="${LITMUS_PYTHON:-$HERE/.venv/bin/python}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
NET=10.77.0
P=ltc
SW=$P-sw
LB_PORT=8080
APP_PORT=8000
ADMIN_TOKEN="${LITMUS_CLUSTER_ADMIN_TOKEN:-admin:admin-secret-0123456789}"
CLIENT_TOKEN="${LITMUS_CLUSTER_CLIENT_TOKEN:-router:client-secret-0123456789}"
DB_NAME=litmus
DB_USER=postgres

say() { printf 'cluster: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, veth pairs and a bridge are root's); run it with sudo"
  command -v ip >/dev/null || die "needs iproute2 (ip)"
}

need_tools() {
  command -v haproxy >/dev/null || die "needs HAProxy: apt-get install -y haproxy"
  [ -x "$PG_BIN/postgres" ] || die "no PostgreSQL binaries in $PG_BIN (set PG_BIN)"
  [ -x "$PY" ] || die "no Python at $PY (set LITMUS_PYTHON)"
  getent passwd postgres >/dev/null || die "needs a 'postgres' user to run PostgreSQL as"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
as_pg() { local ns=$1; shift; ip netns exec "$ns" runuser -u postgres -- "$@"; }

# host NAME ADDR: a namespace with lo up and eth0 (ADDR/24) on the bridge.
host() {
  local name=$1 addr=$2 ns=$P-$1
  ip netns add "$ns"
  in_ns "$ns" ip link set lo up
  ip link add "$P-$name-h" type veth peer name "$P-$name-s"
  ip link set "$P-$name-h" netns "$ns"
  ip link set "$P-$name-s" netns "$SW"
  in_ns "$ns" ip link set "$P-$name-h" name eth0
  in_ns "$ns" ip addr add "$addr/24" dev eth0
  in_ns "$ns" ip link set eth0 up
  in_ns "$SW" ip link set "$P-$name-s" master br0
  in_ns "$SW" ip link set "$P-$name-s" up
}

# spawn NS NAME CMD...: start CMD in NS in the background, logging to $DIR/NAME.log.
spawn() {
  local ns=$1 name=$2; shift 2
  # exec: no shell of ours stays behind it (it would run the EXIT trap when the process dies).
  (trap - EXIT; exec ip netns exec "$ns" setsid "$@" >>"$DIR/$name.log" 2>&1 </dev/null) &
  echo $! >"$DIR/$name.pid"
}

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t)) rc
  while true; do
    rc=0
    "$@" >/dev/null 2>&1 || rc=$?
    [ "$rc" != 0 ] || return 0
    [ "$rc" != 99 ] || die "gave up waiting for $what: it exited"
    [ $SECONDS -lt $end ] || die "timed out waiting for $what"
    sleep 0.2
  done
}

pg_ready() { in_ns "$P-$1" "$PG_BIN/pg_isready" -q -h "$2" -p 5432; }
psql_on() {  # psql_on NS ADDR SQL
  in_ns "$P-$1" runuser -u postgres -- "$PG_BIN/psql" -X -q -At -h "$2" -d "${4:-postgres}" -c "$3"
}

dsn() {
  echo "postgresql://$DB_USER@$NET.11:5432,$NET.12:5432/$DB_NAME?target_session_attrs=read-write"
}

pg_start() {  # pg_start NAME ADDR [extra -c settings]
  local name=$1 addr=$2 extra=${3:-}
  as_pg "$P-$name" "$PG_BIN/pg_ctl" -D "$DIR/$name/data" -l "$DIR/$name/postgres.log" -w -t 60 \
    -o "-c listen_addresses=$addr -c port=5432 -c unix_socket_directories=$DIR/$name/run $extra" start >/dev/null
}

up_failed() {
  local rc=$? f
  [ "$rc" != 0 ] || return 0
  for f in "$DIR"/*.log "$DIR"/db*/postgres.log; do
    [ -f "$f" ] || continue
    say "--- $f (last lines)"
    tail -n 15 "$f" >&2
  done
  say "up failed; tearing down what was made"
  cmd_down >/dev/null 2>&1 || true
  exit "$rc"
}

cmd_up() {
  need_root
  need_tools
  local nodes=${1:-3}
  [[ "$nodes" =~ ^[1-3]$ ]] || die "NODES must be 1, 2 or 3"
  if ns_exists "$SW"; then die "already up (scripts/cluster.sh down first)"; fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  chmod 755 "$DIR"
  echo "$nodes" >"$DIR/nodes"
  trap up_failed EXIT

  say "network: bridge in $SW, hosts on $NET.0/24"
  ip netns add "$SW"
  in_ns "$SW" ip link set lo up
  in_ns "$SW" ip link add br0 type bridge
  in_ns "$SW" ip link set br0 up
  host db1 "$NET.11"
  host db2 "$NET.12"
  host lb "$NET.2"
  host cli "$NET.100"
  local i
  for i in $(seq 1 "$nodes"); do host "app$i" "$NET.2$i"; done

  say "PostgreSQL primary on $NET.11"
  mkdir -p "$DIR/db1/run" "$DIR/db2/run"
  chown -R postgres: "$DIR/db1" "$DIR/db2"
  as_pg "$P-db1" "$PG_BIN/initdb" -D "$DIR/db1/data" -U "$DB_USER" -A trust --no-sync >/dev/null
  cat >>"$DIR/db1/data/postgresql.conf" <<EOF
# scripts/cluster.sh
wal_level = replica
max_wal_senders = 5
wal_keep_size = '256MB'
hot_standby = on
max_connections = 100
shared_buffers = '128MB'
EOF
  cat >>"$DIR/db1/data/pg_hba.conf" <<EOF
host all all $NET.0/24 trust
host replication all $NET.0/24 trust
EOF
  pg_start db1 "$NET.11"
  as_pg "$P-db1" "$PG_BIN/createdb" -h "$NET.11" "$DB_NAME"

  say "PostgreSQL standby on $NET.12 (pg_basebackup from the primary)"
  as_pg "$P-db2" "$PG_BIN/pg_basebackup" -h "$NET.11" -U "$DB_USER" -D "$DIR/db2/data" \
    -X stream -R -c fast \
    -d "host=$NET.11 user=$DB_USER application_name=db2" >/dev/null
  pg_start db2 "$NET.12"
  # Commit = on both servers from now on: the primary waits for db2's flush before answering.
  psql_on db1 "$NET.11" "ALTER SYSTEM SET synchronous_standby_names = 'db2'" >/dev/null
  psql_on db1 "$NET.11" "SELECT pg_reload_conf()" >/dev/null
  wait_for 30 "db2 to stream synchronously" \
    bash -c "[ \"\$(ip netns exec $P-db1 runuser -u postgres -- $PG_BIN/psql -X -At -h $NET.11 -c \"SELECT sync_state FROM pg_stat_replication WHERE application_name = 'db2'\")\" = sync ]"

  say "Litmus nodes: $nodes"
  for i in $(seq 1 "$nodes"); do
    mkdir -p "$DIR/app$i"
    # shellcheck disable=SC2086
    spawn "$P-app$i" "app$i" env -C "$HERE" \
      DATABASE_URL="$(dsn)" LITMUS_DATA_DIR="$DIR/app$i" LITMUS_HOST="$NET.2$i" \
      LITMUS_PORT=$APP_PORT LITMUS_WORKERS=1 ADMIN_API_TOKENS="$ADMIN_TOKEN" \
      CLIENT_API_TOKENS="$CLIENT_TOKEN" PYTHONUNBUFFERED=1 ${LITMUS_CLUSTER_ENV:-} \
      "$PY" -m litmus serve
    # The first node applies the migrations; the others find them done.
    [ "$i" != 1 ] || wait_for 60 "app1 to be ready" app_ready 1
  done
  for i in $(seq 1 "$nodes"); do
    wait_for 60 "app$i to be ready" app_ready "$i"
  done

  say "HAProxy on $NET.2:$LB_PORT"
  write_haproxy "$nodes"
  in_ns "$P-lb" haproxy -c -q -f "$DIR/haproxy.cfg"
  spawn "$P-lb" haproxy haproxy -W -db -f "$DIR/haproxy.cfg"
  wait_for 15 "HAProxy to route to a ready node" in_ns "$P-cli" curl -fsS "http://$NET.2:$LB_PORT/readyz"
  trap - EXIT
  say "up: http://$NET.2:$LB_PORT (from the client namespace: scripts/cluster.sh exec curl ...)"
  cmd_status
}

write_haproxy() {
  local nodes=$1 i
  # Answered by HAProxy itself while no node is ready (e.g. mid-failover): a 503 that says
  # when to retry, as Litmus's own 503s do.
  printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 2\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n{"error":{"code":"unavailable","message":"no Litmus node is ready; retry"}}\n' \
    >"$DIR/503.http"
  {
    cat <<EOF
# Written by scripts/cluster.sh; docs/DEPLOYMENT.md explains each line.
global
  maxconn 4096
  stats socket $DIR/haproxy.sock mode 600 level admin

defaults
  mode http
  option httplog
  timeout connect 2s
  timeout client 60s
  # Longer than LITMUS_INGEST_WAIT_S: a request waiting out a database outage gets Litmus's 503.
  timeout server 60s
  timeout http-request 30s
  timeout queue 10s
  # Event batches carry client event ids, so resending one is safe (Litmus dedupes them):
  # a request whose node died before answering is sent to another node.
  retries 3
  retry-on conn-failure empty-response response-timeout
  option redispatch 1
  errorfile 503 $DIR/503.http

frontend litmus
  bind $NET.2:$LB_PORT
  default_backend nodes

backend nodes
  balance leastconn
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 1
EOF
    for i in $(seq 1 "$nodes"); do
      echo "  server app$i $NET.2$i:$APP_PORT check"
    done
  } >"$DIR/haproxy.cfg"
}

app_ready() {  # app_ready I: node I answers /readyz 200; gives up at once if it exited
  kill -0 "$(cat "$DIR/app$1.pid")" 2>/dev/null || return 99
  in_ns "$P-cli" curl -fsS -m 2 "http://$NET.2$1:$APP_PORT/readyz"
}

primary() {  # prints db1 or db2: the server that is not in recovery
  local name addr
  for name in db1 db2; do
    addr=$NET.1${name#db}
    if pg_ready "$name" "$addr" && [ "$(psql_on "$name" "$addr" "SELECT pg_is_in_recovery()")" = f ]; then
      echo "$name"; return 0
    fi
  done
  return 1
}

cmd_status() {
  need_root
  ns_exists "$SW" || { say "down"; return 3; }
  local name addr i nodes
  nodes=$(cat "$DIR/nodes" 2>/dev/null || echo 0)
  for name in db1 db2; do
    addr=$NET.1${name#db}
    if pg_ready "$name" "$addr"; then
      echo "$name $addr: up, in recovery: $(psql_on "$name" "$addr" "SELECT pg_is_in_recovery()")"
    else
      echo "$name $addr: down"
    fi
  done
  local p
  if p=$(primary); then
    echo "primary: $p; standbys: $(psql_on "$p" "$NET.1${p#db}" "SELECT coalesce(string_agg(application_name || '=' || sync_state, ','), 'none') FROM pg_stat_replication")"
  else
    echo "primary: none"
  fi
  for i in $(seq 1 "$nodes"); do
    if in_ns "$P-cli" curl -fsS -m 2 "http://$NET.2$i:$APP_PORT/readyz" >/dev/null 2>&1; then
      echo "app$i $NET.2$i:$APP_PORT: ready"
    else
      echo "app$i $NET.2$i:$APP_PORT: not ready"
    fi
  done
  if in_ns "$P-cli" curl -fsS -m 2 "http://$NET.2:$LB_PORT/readyz" >/dev/null 2>&1; then
    echo "haproxy $NET.2:$LB_PORT: routing"
  else
    echo "haproxy $NET.2:$LB_PORT: not routing"
  fi
  echo "dsn: $(dsn)"
}

kill_ns() {  # SIGKILL every process in a namespace
  local pids
  pids=$(ip netns pids "$1" 2>/dev/null || true)
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
}

cmd_failover() {
  need_root
  ns_exists "$SW" || die "not up"
  local old new
  old=$(primary) || die "no primary to fail over from"
  if [ "$old" = db1 ]; then new=db2; else new=db1; fi
  pg_ready "$new" "$NET.1${new#db}" || die "the standby $new is not running"
  local isolate=0
  if [ "${1:-}" = --isolate ]; then isolate=1; shift; fi
  local delay=${1:-0}
  if [ $isolate = 1 ]; then
    # The host vanishes: no FIN or RST reaches anyone, open connections to it just go quiet.
    say "cutting $old off the network"
    in_ns "$P-$old" ip link set eth0 down
  fi
  say "SIGKILL every process of the primary $old"
  kill_ns "$P-$old"
  date +%s.%N >"$DIR/killed_at"
  sleep "$delay"
  say "promoting $new"
  as_pg "$P-$new" "$PG_BIN/pg_ctl" -D "$DIR/$new/data" -w -t 60 promote >/dev/null
  date +%s.%N >"$DIR/promoted_at"
  # The new primary has no standby yet: it must not wait for one, or no commit would return.
  # (A real deployment rebuilds a standby from it next; docs/DEPLOYMENT.md.)
  psql_on "$new" "$NET.1${new#db}" "ALTER SYSTEM SET synchronous_standby_names = ''" >/dev/null
  psql_on "$new" "$NET.1${new#db}" "SELECT pg_reload_conf()" >/dev/null
  say "promoted $new at $(cat "$DIR/promoted_at")"
}

cmd_kill_node() {
  need_root
  local i=${1:?node number}
  ns_exists "$P-app$i" || die "no node app$i"
  kill_ns "$P-app$i"
  say "SIGKILLed app$i"
}

cmd_down() {
  need_root
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
    kill_ns "$ns"
  done
  sleep 0.2
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$DIR"
  say "down: namespaces, veth pairs, bridge, processes and $DIR removed"
}

cmd_exec() {
  need_root
  ns_exists "$P-cli" || die "not up"
  in_ns "$P-cli" "$@"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  failover) shift; cmd_failover "$@" ;;
  kill-node) shift; cmd_kill_node "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  dsn) dsn ;;
  *) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
