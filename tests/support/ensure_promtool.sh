#!/usr/bin/env bash
# Debian's `prometheus` package for promtool (`promtool test rules` checks
# deploy/prometheus/alerts.yml against deploy/prometheus/alerts_test.yml). Idempotent.
set -euo pipefail
if command -v promtool >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure_promtool: promtool is missing and installing it needs root (apt-get install prometheus)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Only the binaries are wanted: no recommended exporters; the daemon is not started here
# (no init system in CI containers; policy-rc.d may refuse it anyway).
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null
