#!/usr/bin/env bash
# The Debian packages the test suite needs, installed when missing. The one list: `make test` runs
# this before pytest and `.ci/run` runs it through `make test`.
#   chromium, chromium-driver  the run page is tested in a real browser (tests/test_run_page.py)
#   the shellcheck package     the container scripts' checks (tests/test_cluster_scripts.py)
#   nodejs                     the BigQuery split's JavaScript CRC-32 against zlib's (tests/test_validate_sql.py)
# Usage: system-packages.sh [--check]   (--check: name what is missing, install nothing)
# Where nothing can be installed (not root and no passwordless sudo, or no apt-get), it stops with
# one line that says what to install.
set -euo pipefail

# command the tests run → the Debian package that provides it
PACKAGES=(
  "chromium:chromium"
  "chromedriver:chromium-driver"
  "shellcheck:shellcheck"
  "node:nodejs"
)

missing=()
for entry in "${PACKAGES[@]}"; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
((${#missing[@]})) || exit 0

if [[ "${1:-}" == "--check" ]]; then
  echo "missing Debian packages for the tests: ${missing[*]}"
  exit 1
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    sudo=(unavailable)
  fi
fi
if ! command -v apt-get >/dev/null 2>&1 || [[ "${sudo[*]}" == unavailable ]]; then
  echo "error: the tests need Debian packages that are missing and cannot be installed here (needs root and apt-get): as root run: apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "installing the tests' Debian packages: ${missing[*]}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: apt-get could not install ${missing[*]} (its output is above)" >&2
  exit 1
fi
for entry in "${PACKAGES[@]}"; do
  if ! command -v "${entry%%:*}" >/dev/null 2>&1; then
    echo "error: apt-get installed ${entry#*:} but '${entry%%:*}' is still not on PATH" >&2
    exit 1
  fi
done
