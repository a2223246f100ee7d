#!/usr/bin/env bash
# Greedy against batched matching, measured with the fleet simulator: the same seeded city and
# demand at three loads, each against a fresh `mealkitz serve` on the embedded store.
#
#   benches/matching_compare.sh            # writes target/matching/*.json and prints a table
#
# Knobs: DRIVERS (200), MERCHANTS (40), DURATION (120s), SEED (7), LOADS ("low:60 medium:180 high:300",
# orders per minute), MEALKITZ_BIN (the release binary).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mealkitz/target}"
BIN="${MEALKITZ_BIN:-$CARGO_TARGET_DIR/release/mealkitz}"
[ -x "$BIN" ] || cargo build --release --locked
OUT="${OUT:-target/matching}"
DRIVERS="${DRIVERS:-200}"
MERCHANTS="${MERCHANTS:-40}"
DURATION="${DURATION:-120s}"
SEED="${SEED:-7}"
LOADS="${LOADS:-low:60 medium:180 high:300}"
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

for mode in greedy batched; do
  for load in $LOADS; do
    name="${load%%:*}"
    rate="${load##*:}"
    dir=$(mktemp -d)
    port=$(free_port)
    DATABASE_URL="sqlite://$dir/sim.db" MEALKITZ_MATCHING="$mode" RUST_LOG=warn \
      "$BIN" serve --bind "127.0.0.1:$port" >"$dir/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
    echo "== $mode, $name load ($rate orders/min, $DRIVERS drivers)" >&2
    "$BIN" simulate --url "http://127.0.0.1:$port" --drivers "$DRIVERS" --merchants "$MERCHANTS" \
      --orders-per-minute "$rate" --duration "$DURATION" --seed "$SEED" --json \
      >"$OUT/$mode-$name.json" 2>"$OUT/$mode-$name.log" || true
    kill -TERM "$server"; wait "$server" || true
    rm -rf "$dir"
  done
done

python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = []
for path in sorted(out.glob("*.json")):
    mode, load = path.stem.split("-", 1)
    r = json.loads(path.read_text())
    rows.append((load, mode, r))
order = {"low": 0, "medium": 1, "high": 2}
rows.sort(key=lambda x: (order.get(x[0], 9), x[1]))
print("| load | matching | orders/min | delivered | pickup time mean / p90 (sim min) | pickup distance mean / p90 (m) | time to assignment mean / p90 (s) | dispatch latency p99 (ms) | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for load, mode, r in rows:
    pt, pd, ta, dl = r["pickup_time_sim_min"], r["pickup_distance_m"], r["time_to_assignment_secs"], r["dispatch_latency_ms"]
    errors = sum(r["errors"].values())
    print(f"| {load} | {mode} | {r['orders_per_minute']:.0f} | {r['orders_delivered']}/{r['orders_placed']} | "
          f"{pt['mean']:.2f} / {pt['p90']:.2f} | {pd['mean']:.0f} / {pd['p90']:.0f} | {ta['mean']:.2f} / {ta['p90']:.2f} | "
          f"{dl['p99']:.0f} | {errors} |")
PY
