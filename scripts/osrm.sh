#!/usr/bin/env bash
# OSRM for development and the tests, without Docker or a compiler: the binaries of the PyPI
# wheel osrm-bindings (osrm-extract, osrm-contract, osrm-routed and the car.lua profile), the
# road graph built from an OpenStreetMap extract (default: the Helsinki extract in the repo),
# and osrm-routed serving it on loopback.
#
#   scripts/osrm.sh install                 # the binaries, into $OSRM_HOME (once)
#   scripts/osrm.sh prepare [city.osm.pbf]  # extract + contract into $OSRM_HOME/data/<city>/
#   scripts/osrm.sh start [port] [city]     # osrm-routed on 127.0.0.1:port (default 5000, Helsinki)
#   scripts/osrm.sh stop [port]
#   scripts/osrm.sh where                   # print the paths
#
# Then run the engine with MEALKITZ_OSRM_URL=http://127.0.0.1:5000.
#
# OSRM_HOME is ${MEALKITZ_OSRM_HOME:-${MEALKITZ_CACHE_DIR:-$HOME/.cache/mealkitz}/osrm}.
# The wheel needs Python ≥ 3.12 to install, so it is not installed: pip downloads it for 3.12 and
# its bin/ and share/profiles/ are unpacked (the binaries are linked against glibc and libstdc++
# only). OSRM_WHEEL=path/to/osrm_bindings-….whl uses a wheel already on disk instead of PyPI.
# Every step is skipped when its result is there and up to date. The graph is derived from
# OpenStreetMap data and is under the ODbL like it (data/helsinki/README.md).
set -euo pipefail
CALLER_DIR="$PWD"
cd "$(dirname "$0")/.."

OSRM_VERSION=26.10.0
# SHA-256 of osrm_bindings-26.10.0-cp312-abi3-manylinux_2_28_x86_64.whl on PyPI.
OSRM_WHEEL_SHA256_X86_64=840d6f82812eb9f9e17c71eb9083dfa15f3be2bfec4965c32aefa48b00d3a951
DEFAULT_EXTRACT=data/helsinki/Helsinki.osm.pbf
DEFAULT_PORT=5000
# How long `start` waits for osrm-routed to answer.
START_WAIT_SECS=30
# osrm-extract --small-component-size: points snap to a road in a component of at least this
# many nodes. OSRM's default, 1000, suits a city or a country; in a small extract cut out of a
# city (Helsinki's car graph has 2,106 nodes in many pieces) most roads are in "small"
# components and every snap searches far: a 1×10 table took 3.5–6 ms there, 0.4–1.5 ms with 50,
# with the same durations. Extracts under SMALL_EXTRACT_BYTES get SMALL_EXTRACT_COMPONENT_NODES;
# OSRM_SMALL_COMPONENT_SIZE overrides both.
SMALL_EXTRACT_BYTES=$((10 * 1024 * 1024))
SMALL_EXTRACT_COMPONENT_NODES=50
OSRM_DEFAULT_COMPONENT_NODES=1000

CACHE_DIR="${MEALKITZ_CACHE_DIR:-$HOME/.cache/mealkitz}"
OSRM_HOME="${MEALKITZ_OSRM_HOME:-$CACHE_DIR/osrm}"
BIN="$OSRM_HOME/bin"
PROFILES="$OSRM_HOME/share/profiles"
DATA="$OSRM_HOME/data"
RUN="$OSRM_HOME/run"

say() { printf '==> %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$* missing and no apt-get to install it with"
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

installed_version() {
  [ -x "$BIN/osrm-routed" ] && "$BIN/osrm-routed" --version 2>/dev/null | tr -d 'v\r\n'
}

# The binaries from the wheel, checked to run.
install() {
  if [ "$(installed_version || true)" = "$OSRM_VERSION" ] && [ -x "$BIN/osrm-extract" ] \
      && [ -x "$BIN/osrm-contract" ] && [ -f "$PROFILES/car.lua" ]; then
    say "OSRM $OSRM_VERSION is installed in $OSRM_HOME"
    return
  fi
  command -v unzip >/dev/null 2>&1 || { say "installing unzip with apt-get"; apt_install unzip; }
  local wheel
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  if [ -n "${OSRM_WHEEL:-}" ]; then
    [ -f "$OSRM_WHEEL" ] || die "OSRM_WHEEL=$OSRM_WHEEL is not a file"
    wheel="$OSRM_WHEEL"
  else
    command -v python3 >/dev/null 2>&1 || { say "installing python3 with apt-get"; apt_install python3; }
    if ! python3 -m pip --version >/dev/null 2>&1; then
      say "installing pip with apt-get"
      apt_install python3-pip
    fi
    say "downloading osrm-bindings $OSRM_VERSION from PyPI (21 MB)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
      --only-binary=:all: --python-version 3.12 --dest "$scratch" "osrm-bindings==$OSRM_VERSION"
    wheel=$(ls "$scratch"/osrm_bindings-"$OSRM_VERSION"-*.whl 2>/dev/null | head -n 1)
    [ -n "$wheel" ] || die "pip downloaded no osrm-bindings $OSRM_VERSION wheel"
  fi
  case "$(basename "$wheel")" in
    *manylinux_2_28_x86_64.whl)
      local sum
      sum=$(sha256sum "$wheel" | cut -d' ' -f1)
      [ "$sum" = "$OSRM_WHEEL_SHA256_X86_64" ] \
        || die "$(basename "$wheel") has SHA-256 $sum, expected $OSRM_WHEEL_SHA256_X86_64"
      ;;
    *) say "no pinned checksum for $(basename "$wheel"); using it unchecked" ;;
  esac
  unzip -q "$wheel" 'osrm/bin/*' 'osrm/share/profiles/*' 'osrm_bindings-*.dist-info/licenses/*' \
    -d "$scratch/unpacked"
  rm -rf "$OSRM_HOME/bin" "$OSRM_HOME/share" "$OSRM_HOME/LICENSE.TXT"
  mkdir -p "$OSRM_HOME"
  mv "$scratch/unpacked/osrm/bin" "$BIN"
  mkdir -p "$OSRM_HOME/share"
  mv "$scratch/unpacked/osrm/share/profiles" "$PROFILES"
  cp "$scratch"/unpacked/osrm_bindings-*.dist-info/licenses/* "$OSRM_HOME/" 2>/dev/null || true
  chmod +x "$BIN"/*
  local version
  version=$(installed_version) || die "the unpacked osrm-routed does not run (ldd $BIN/osrm-routed)"
  [ "$version" = "$OSRM_VERSION" ] || die "the unpacked osrm-routed says it is $version, not $OSRM_VERSION"
  "$BIN/osrm-extract" --version >/dev/null && "$BIN/osrm-contract" --version >/dev/null \
    || die "osrm-extract or osrm-contract does not run"
  say "OSRM $OSRM_VERSION installed: binaries in $BIN, profiles in $PROFILES"
}

need_binaries() {
  [ -x "$BIN/osrm-routed" ] || die "OSRM is not installed in $OSRM_HOME: run scripts/osrm.sh install"
}

city_of() { basename "$1" | sed -E 's/\.osm(\.pbf|\.bz2)?$//'; }

# The road graph for the car profile, rebuilt when the extract, the profile or OSRM changed.
prepare() {
  need_binaries
  local extract="${1:-$DEFAULT_EXTRACT}"
  # A relative path is the caller's.
  case "$extract" in /*) ;; *) [ -z "${1:-}" ] || extract="$CALLER_DIR/$extract" ;; esac
  [ -f "$extract" ] || die "no extract at $extract"
  local city dir stamp wanted
  city=$(city_of "$extract")
  dir="$DATA/$city"
  stamp="$dir/.stamp"
  local component_nodes="${OSRM_SMALL_COMPONENT_SIZE:-}"
  if [ -z "$component_nodes" ]; then
    if [ "$(stat -c %s "$extract")" -lt "$SMALL_EXTRACT_BYTES" ]; then
      component_nodes=$SMALL_EXTRACT_COMPONENT_NODES
    else
      component_nodes=$OSRM_DEFAULT_COMPONENT_NODES
    fi
  fi
  wanted="osrm $OSRM_VERSION; small components $component_nodes; extract $(sha256sum "$extract" | cut -d' ' -f1); profile $(cat "$PROFILES"/car.lua "$PROFILES"/lib/*.lua | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -f "$dir/$city.osrm.hsgr" ]; then
    say "$city is prepared: $dir/$city.osrm"
    return
  fi
  say "preparing $city from $extract into $dir (osrm-extract car.lua, small components < $component_nodes nodes, + osrm-contract)"
  rm -rf "$dir"
  mkdir -p "$dir"
  local started=$SECONDS log="$dir/prepare.log"
  cp "$extract" "$dir/$city.osm.pbf"
  if ! "$BIN/osrm-extract" -p "$PROFILES/car.lua" \
      --small-component-size "$component_nodes" "$dir/$city.osm.pbf" >"$log" 2>&1 \
      || ! "$BIN/osrm-contract" "$dir/$city.osrm" >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "preparing $city failed (log: $log)"
  fi
  rm -f "$dir/$city.osm.pbf"
  printf '%s\n' "$wanted" >"$stamp"
  say "$city prepared in $((SECONDS - started)) s: $dir/$city.osrm (log: $log)"
}

pid_file() { echo "$RUN/osrm-routed-$1.pid"; }

start() {
  need_binaries
  local port="${1:-$DEFAULT_PORT}" city="${2:-$(city_of "$DEFAULT_EXTRACT")}"
  local graph="$DATA/$city/$city.osrm" pidf
  pidf=$(pid_file "$port")
  [ -f "$graph.hsgr" ] || die "no prepared graph at $graph: run scripts/osrm.sh prepare"
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    say "osrm-routed is running already (pid $(cat "$pidf")): http://127.0.0.1:$port"
    echo "http://127.0.0.1:$port"
    return
  fi
  port_open "$port" && die "127.0.0.1:$port is taken by another process"
  mkdir -p "$RUN"
  local log="$RUN/osrm-routed-$port.log"
  nohup "$BIN/osrm-routed" --algorithm ch -i 127.0.0.1 -p "$port" "$graph" >"$log" 2>&1 &
  local pid=$!
  echo "$pid" >"$pidf"
  for _ in $(seq 1 $((START_WAIT_SECS * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidf"
      tail -n 20 "$log" >&2
      die "osrm-routed exited (log: $log)"
    fi
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/nearest/v1/driving/0,0" 2>/dev/null \
        || { ! command -v curl >/dev/null && port_open "$port"; }; then
      say "osrm-routed (pid $pid) serves $graph on http://127.0.0.1:$port (log: $log)"
      echo "http://127.0.0.1:$port"
      return
    fi
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  rm -f "$pidf"
  die "osrm-routed did not answer on 127.0.0.1:$port within $START_WAIT_SECS s (log: $log)"
}

stop() {
  local port="${1:-$DEFAULT_PORT}" pidf
  pidf=$(pid_file "$port")
  if [ ! -f "$pidf" ]; then
    say "no osrm-routed started by this script on port $port"
    return
  fi
  local pid
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "stopped osrm-routed (pid $pid) on port $port"
  fi
  rm -f "$pidf"
}

where() {
  echo "OSRM_HOME=$OSRM_HOME"
  echo "binaries:  $BIN ($(installed_version || echo 'not installed'))"
  echo "profiles:  $PROFILES"
  echo "graphs:    $DATA"
  for graph in "$DATA"/*/*.osrm.hsgr; do
    [ -e "$graph" ] && echo "  ${graph%.hsgr}"
  done
  echo "pid files and logs: $RUN"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  install) install ;;
  prepare) prepare "$@" ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  where) where ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
