#!/usr/bin/env bash
# Installs what building and testing imgedge needs on Debian/Ubuntu, only if missing:
# cmake (pingora's zlib-ng, libjpeg-turbo), nasm (libjpeg-turbo SIMD), a C toolchain, and
# the PostgreSQL server that the usage tests start on a loopback port of their own, and
# Prometheus (`prometheus`, `promtool`), which the dashboard test runs against the server.
# Idempotent; uses sudo when not root.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# Prometheus is a test tool here, never a service: the package would start one on :9090
# (systemd or its init script), so service starts are refused while it installs
# (invoke-rc.d and deb-systemd-invoke honour policy-rc.d). The test runs its own
# `prometheus` on a free loopback port.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "installing: prometheus" >&2
  policy=/usr/sbin/policy-rc.d
  placed=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    placed=1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >&2 ||
    echo "WARNING: could not install prometheus: the dashboard test will be skipped" >&2
  [ -z "$placed" ] || $sudo rm -f "$policy"
  # the package enables its unit (and SysV script) for the next boot: keep :9090 free
  if command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
      $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
    else
      $sudo systemctl disable prometheus >/dev/null 2>&1 || true
    fi
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
