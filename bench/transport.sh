#!/usr/bin/env bash
# Transport benchmark (BENCHMARKS.md, "gRPC transport"): builds the release
# geo-service and control-service, seeds a control database with 10 000
# synthetic archived bans (the history bench's generator), starts both on
# 127.0.0.1, and measures from a Python grpcio client in another process the
# median latency of responses from about 1 KB to 1 MB, and BansByCountry over
# the 10 000 bans. Prints a Markdown table.
#
#   bench/transport.sh            # 200 runs per row
#   RUNS=50 bench/transport.sh
#   # other binaries (e.g. a build of another commit), a database seeded before:
#   BANGUI_BENCH_BIN=DIR BANGUI_BENCH_SEEDED=control.db bench/transport.sh
#
# Needs: cargo, python3 (a venv with grpcio and grpcio-tools from PyPI is
# made in $HOME/.cache/bangui/bench-venv), a GeoLite2-Country.mmdb in
# $BANGUI_DATA_DIR (default $HOME/.cache/bangui/data).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DATA=${BANGUI_DATA_DIR:-$HOME/.cache/bangui/data}
VENV=${BANGUI_BENCH_VENV:-$HOME/.cache/bangui/bench-venv}
RUNS=${RUNS:-200}
MMDB=$DATA/GeoLite2-Country.mmdb
[ -f "$MMDB" ] || { echo "missing $MMDB" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cd "$ROOT"
BIN=${BANGUI_BENCH_BIN:-$TARGET/release}
if [ -z "${BANGUI_BENCH_BIN:-}" ]; then
    echo "building release binaries…" >&2
    cargo build --release -q -p geo-service -p control-service --bins
fi
if [ -n "${BANGUI_BENCH_SEEDED:-}" ]; then
    cp "$BANGUI_BENCH_SEEDED" "$WORK/control.db"
else
    echo "seeding 10 000 archived bans…" >&2
    BANGUI_BENCH_ROWS=10000 BANGUI_BENCH_SEED_DB="$WORK/control.db" \
        cargo bench -q --profile release -p control-service --bench history >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null || "$VENV/bin/pip" install -q grpcio grpcio-tools
PROTO_INCLUDE=$("$VENV/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
mkdir -p "$WORK/stubs"
"$VENV/bin/python" -m grpc_tools.protoc -I proto -I "$PROTO_INCLUDE" \
    --python_out="$WORK/stubs" --grpc_python_out="$WORK/stubs" \
    proto/bangui/geo/v1/geo.proto proto/bangui/control/v1/*.proto

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GEO_PORT=$(free_port)
CONTROL_PORT=$(free_port)
PASSWORD="transport bench password"
HASH=$(printf '%s' "$PASSWORD" | "$BIN/control-service" hash-password)

"$BIN/geo-service" --mmdb "$MMDB" --listen "127.0.0.1:$GEO_PORT" --metrics-listen 127.0.0.1:0 \
    --database-url "sqlite://$WORK/geo.db" --log warn >"$WORK/geo.log" 2>&1 &
PIDS+=($!)
"$BIN/control-service" --listen "127.0.0.1:$CONTROL_PORT" --metrics-listen 127.0.0.1:0 \
    --database-url "sqlite://$WORK/control.db" --fail2ban-socket "$WORK/none.sock" \
    --geo-endpoint "http://127.0.0.1:$GEO_PORT" --admin-password-hash "$HASH" \
    --probe-interval 1h --log warn >"$WORK/control.log" 2>&1 &
PIDS+=($!)

echo "$(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')" >&2
"$VENV/bin/python" bench/transport_client.py "$WORK/stubs" "127.0.0.1:$GEO_PORT" "127.0.0.1:$CONTROL_PORT" \
    "$PASSWORD" "$RUNS"
