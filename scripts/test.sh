#!/usr/bin/env bash
# The test command (README, CI): make sure PostgreSQL and Redis answer on loopback, installing
# and starting them on a fresh Debian machine, install OSRM and prepare its Helsinki graph
# (scripts/osrm.sh), install Chromium, Node.js and the browser tests' npm packages (among them
# oidc-provider, the OpenID provider sign-in is tested against), then validate the Kubernetes
# manifests, check formatting and lints and run every test. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# The build cache lives outside the clone so a fresh clone (CI) reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mealkitz/target}"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { printf '==> %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

wait_for_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 0.5
  done
  say "$name did not come up on 127.0.0.1:$port"
  exit 1
}

ensure_postgres() {
  if port_open 5432; then return; fi
  say "PostgreSQL is not answering on 127.0.0.1:5432; starting it"
  local installed_now=""
  if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
    say "installing PostgreSQL with apt-get"
    apt_install postgresql
    installed_now=1
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -n "$installed_now" ]; then
    # A server we just installed for tests: let the test user in over loopback without a
    # password, as on the CI machines.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || as_root pg_ctlcluster "$version" main start
  wait_for_port 5432 PostgreSQL
}

ensure_redis() {
  if port_open 6379; then return; fi
  say "Redis is not answering on 127.0.0.1:6379; starting it"
  if ! command -v redis-server >/dev/null; then
    say "installing Redis with apt-get"
    apt_install redis-server
  fi
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/test.log
  wait_for_port 6379 Redis
}

ensure_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    say "installing Chromium with apt-get (for the browser tests)"
    apt_install chromium
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Node.js with apt-get (for the browser tests)"
    apt_install nodejs npm
  fi
}

# A C compiler and make, for the crates that build C: SQLite's amalgamation and jemalloc.
ensure_build_tools() {
  if command -v cc >/dev/null && command -v make >/dev/null; then return; fi
  say "installing gcc and make with apt-get (the C parts of SQLite and jemalloc)"
  apt_install gcc make libc6-dev
}

ensure_build_tools
ensure_postgres
ensure_redis
ensure_browser

# OSRM's binaries from the PyPI wheel and the Helsinki road graph, in the cache (seconds once
# installed; skipped when up to date). The tests start their own osrm-routed processes on it
# (tests/api/osrm_support.rs).
say "OSRM (scripts/osrm.sh install && scripts/osrm.sh prepare)"
./scripts/osrm.sh install
./scripts/osrm.sh prepare
export MEALKITZ_TEST_OSRM_HOME="${MEALKITZ_OSRM_HOME:-${MEALKITZ_CACHE_DIR:-$HOME/.cache/mealkitz}/osrm}"

# Offline: renders k8s/overlays/* and checks them against the Kubernetes schemas (a few seconds;
# the first run installs kubernetes-validate from PyPI into ~/.cache/mealkitz/).
say "Kubernetes manifests (scripts/validate-k8s.sh)"
./scripts/validate-k8s.sh

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

# The browser tests' packages, and oidc-provider (a real OpenID provider the Rust tests of
# sign-in start too: tests/api/oidc.rs), before any test runs.
say "npm ci (web/tests: playwright-core, oidc-provider)"
(cd web/tests && npm ci --no-audit --no-fund --loglevel=error)

say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
  # nextest does not run doc tests.
  cargo test --locked --doc
else
  cargo test --locked --no-fail-fast
fi
say "browser tests (Chromium + playwright-core)"
cargo build --locked
MEALKITZ_BIN="$CARGO_TARGET_DIR/debug/mealkitz" SCREENSHOT_DIR="$PWD/target/screenshots" \
  node --test --test-concurrency=1 web/tests/
say "screenshots in target/screenshots/"
say "all checks passed"
