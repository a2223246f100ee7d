#!/usr/bin/env bash
# Group commit against a transaction per transition, side by side in one run: the dispatch load
# tool (benches/dispatch_load.rs: 10,000 driver sockets, merchants' boards, paced checkouts) on
# PostgreSQL and on SQLite, at two rates, with MEALKITZ_JOURNAL_GROUP_COMMIT true and false.
#
#   benches/journal_compare.sh               # full logs in target/journal-compare/, summary on stdout
#   RATES="200" STORES="postgres" benches/journal_compare.sh
#
# Knobs: RATES ("200 500", orders/s), STORES ("postgres sqlite"), MODES ("true false"), and every
# knob of dispatch_load (DISPATCH_DRIVERS, DISPATCH_SECS, …), passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mealkitz/target}"
OUT="${OUT:-target/journal-compare}"
RATES="${RATES:-200 500}"
STORES="${STORES:-postgres sqlite}"
MODES="${MODES:-true false}"
mkdir -p "$OUT"
cargo bench --bench dispatch_load --no-run >/dev/null 2>&1 || cargo bench --bench dispatch_load --no-run

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for store in $STORES; do
  for rate in $RATES; do
    for group in $MODES; do
      name="$store-$rate-group_$group"
      echo "== $store, $rate orders/s, MEALKITZ_JOURNAL_GROUP_COMMIT=$group"
      DISPATCH_STORE="$store" DISPATCH_ORDERS_PER_SEC="$rate" MEALKITZ_JOURNAL_GROUP_COMMIT="$group" \
        cargo bench --bench dispatch_load >"$OUT/$name.log" 2>&1 || echo "   (the run failed: $OUT/$name.log)"
      grep -E "checkouts: |DISPATCH LATENCY|journal_write_seconds|journal_commit_seconds|journal_batch_transitions|server CPU|PostgreSQL CPU|machine \(" \
        "$OUT/$name.log" | sed 's/^ */   /' || true
    done
  done
done
