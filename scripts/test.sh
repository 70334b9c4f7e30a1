#!/usr/bin/env bash
# The whole test suite: Rust unit, property and integration tests, then the
# end-to-end suite that drives the real `berth` binary with boto3 and the aws CLI.
# Installs what a fresh Debian machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v cc >/dev/null || need_apt+=(build-essential)
# Real containers: runc, a static busybox for test images, iproute2 for instance networks.
if [ "$(id -u)" = 0 ]; then
  command -v runc >/dev/null || need_apt+=(runc)
  dpkg -s busybox-static >/dev/null 2>&1 || need_apt+=(busybox-static)
  command -v ip >/dev/null || need_apt+=(iproute2)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
if ! python3 -c 'import boto3, botocore, pytest, awscli, requests' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check boto3 awscli pytest requests \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages boto3 awscli pytest requests
fi

echo "== cargo test"
cargo test --workspace --quiet

echo "== end-to-end (boto3, aws CLI, real server)"
cargo build --quiet -p berth
BERTH_BIN="$CARGO_TARGET_DIR/debug/berth" python3 -m pytest -q tests/e2e "$@"
