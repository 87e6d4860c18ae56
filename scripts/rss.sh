#!/usr/bin/env bash
# Measures geo-service memory beside the real GeoLite2-Country database:
# RSS after start, then peak (VmHWM) and current RSS after 20 LookupBatch
# calls of 10 000 addresses through grpcurl. Extra environment (e.g.
# MIMALLOC_ARENA_EAGER_COMMIT=0) is passed to the service.
#   usage: scripts/rss.sh [VAR=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
data="${BANGUI_DATA_DIR:-$HOME/.cache/bangui/data}"
bash scripts/fetch-test-data.sh >/dev/null
cargo build -q --release -p geo-service
log="$(mktemp)"
env "$@" "$target/release/geo-service" --mmdb "$data/GeoLite2-Country.mmdb" \
  --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-format json >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$log" "$log.json"' EXIT
for _ in $(seq 200); do grep -q '"serving"' "$log" && break; sleep 0.05; done
addr=$(grep '"serving"' "$log" | sed 's/.*"grpc_addr":"\([^"]*\)".*/\1/')
echo "after start:   $(grep VmRSS /proc/$pid/status)"
python3 -c 'import json,random; random.seed(1); print(json.dumps({"ips":[".".join(str(random.randint(1,223)) for _ in range(4)) for _ in range(10000)]}))' >"$log.json"
for _ in $(seq 20); do
  grpcurl -plaintext -max-msg-sz 67108864 -d @ "$addr" bangui.geo.v1.GeoService/LookupBatch <"$log.json" >/dev/null
done
echo "after 20 x 10k: $(grep VmHWM /proc/$pid/status)  $(grep VmRSS /proc/$pid/status)"
sleep 2
echo "2 s later:     $(grep VmRSS /proc/$pid/status)"
