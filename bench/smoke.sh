#!/usr/bin/env bash
# Smoke run of the benchmark driver (a step of scripts/test, ~15 s): a few
# seconds of `switchboard-bench peer-fanout` against `switchboard serve --dev`
# and against the `ws` peer (bench/peers), `peer-idle` and a small
# reconnect `storm` against Switchboard, asserting only that figures are reported and that nothing was
# lost. The real suite is scripts/bench; this keeps it from rotting.
#
# Environment: SWITCHBOARD_BIN, SWITCHBOARD_BENCH_BIN (default: the debug
# binaries of CARGO_TARGET_DIR, switchboard-bench built here).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SB_BIN="${SWITCHBOARD_BIN:-$TARGET_DIR/debug/switchboard}"
[[ -x "$SB_BIN" ]] || cargo build -q -p switchboard-server
if [[ -n "${SWITCHBOARD_BENCH_BIN:-}" ]]; then
  BENCH="$SWITCHBOARD_BENCH_BIN"
else
  cargo build -q -p switchboard-bench
  BENCH="$TARGET_DIR/debug/switchboard-bench"
fi
(cd bench/peers && npm ci --no-audit --no-fund --loglevel=error)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local i
  for i in $(seq 1 300); do
    port_open "$1" && return 0
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

DATA="$(mktemp -d)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DATA"' EXIT
SB_PORT="$(free_port)"
WS_PORT="$(free_port)"
# The server rejects unknown SWITCHBOARD_* variables: drop this script's own.
env -u SWITCHBOARD_BIN -u SWITCHBOARD_BENCH_BIN \
  SWITCHBOARD_CHANNEL_DEFAULTS_PRESENCE=false SWITCHBOARD_CHANNEL_DEFAULTS_JOIN_LEAVE=false \
  "$SB_BIN" serve --dev --http-addr "127.0.0.1:$SB_PORT" --data-dir "$DATA" --log-level warn &
SB_PID=$!
PIDS+=("$SB_PID")
node bench/peers/ws-server.js "$WS_PORT" >/dev/null &
WS_PID=$!
PIDS+=("$WS_PID")
wait_port "$SB_PORT"
wait_port "$WS_PORT"

# check NAME JSON: figures present, every subscriber connected, nothing lost.
check() {
  python3 - "$1" "$2" <<'PY'
import json, sys
name, r = sys.argv[1], json.loads(sys.argv[2])
problems = []
if r["bench"] == "storm":
    if r["reconnected"] != r["clients"] or r["recovered"] != r["clients"] or r["not_recovered"]:
        problems.append(f"{r['reconnected']} of {r['clients']} reconnected, {r['recovered']} recovered")
    if r["missing"] or r["duplicates"]:
        problems.append(f"missing {r['missing']}, duplicates {r['duplicates']}")
    if not (r["storm_secs"] > 0 and r["reconnect_rate"] > 0) or r.get("server_cpu_secs") is None:
        problems.append("no storm time, rate or CPU figure")
    print(f"{name}: {r['reconnected']} reconnected in {r['storm_secs']:.2f} s, "
          f"{r['recovered']} recovered, missing {r['missing']}")
elif r["bench"] == "peer-idle":
    if r["connected"] != r["connections"] or r["failed"]:
        problems.append(f"{r['connected']} of {r['connections']} connected")
    if not r["connect_rate"] > 0 or r.get("server_rss_per_conn_kib") is None:
        problems.append("no connect rate or RSS figure")
    print(f"{name}: {r['connected']} connections, {r['connect_rate']:.0f}/s, "
          f"{r['server_rss_per_conn_kib']:.1f} KiB per connection")
else:
    s = r["steps"][0]
    if r["subscribers_connected"] != r["subscribers"]:
        problems.append(f"{r['subscribers_connected']} of {r['subscribers']} subscribers")
    if not (s["expected"] > 0 and s["delivered"] == s["expected"]):
        problems.append(f"delivered {s['delivered']} of {s['expected']}")
    if r["missing"] or r["duplicates"] or s["publish_errors"]:
        problems.append(f"missing {r['missing']}, duplicates {r['duplicates']}, publish errors {s['publish_errors']}")
    if not (s["latency_ms"]["count"] > 0 and s["latency_ms"]["p99"] > 0 and s["delivered_per_sec"] > 0):
        problems.append("no latency or rate figures")
    if s["server_cpu_secs"] < 0:
        problems.append("no server CPU figure")
    print(f"{name}: {s['delivered']} deliveries, {s['delivered_per_sec']:.0f}/s, "
          f"p50 {s['latency_ms']['p50']:.2f} ms, p99 {s['latency_ms']['p99']:.2f} ms, "
          f"{s['server_cpu_secs_per_million']:.1f} server CPU-s per million, loss {r['missing']}")
if problems:
    sys.exit(f"{name}: " + "; ".join(problems))
PY
}

FANOUT=(peer-fanout --subscribers 50 --channels 2 --rate 40 --duration 2s --drain 5s --json)
check "switchboard fanout" "$("$BENCH" "${FANOUT[@]}" --system switchboard \
  --url "ws://127.0.0.1:$SB_PORT/connection/websocket" --api "http://127.0.0.1:$SB_PORT" \
  --api-key dev-api-key --secret dev-token-secret --server-pid "$SB_PID")"
check "ws peer fanout" "$("$BENCH" "${FANOUT[@]}" --system ws --url "ws://127.0.0.1:$WS_PORT" \
  --server-pid "$WS_PID")"
check "switchboard idle" "$("$BENCH" peer-idle --connections 100 --hold 1s --json --system switchboard \
  --url "ws://127.0.0.1:$SB_PORT/connection/websocket" --secret dev-token-secret --server-pid "$SB_PID")"
check "switchboard storm" "$("$BENCH" storm --clients 100 --channels 5 --missed 3 --json \
  --url "ws://127.0.0.1:$SB_PORT/connection/websocket" --api "http://127.0.0.1:$SB_PORT" \
  --api-key dev-api-key --secret dev-token-secret --channel-prefix storm --server-pid "$SB_PID")"
echo "bench smoke: OK"
