#!/usr/bin/env bash
# Installs what the tests use besides Rust, each only when missing:
#   - Debian's chromium (the dashboard's browser test) and prometheus (promtool);
#   - playwright-core from npm, into tests/browser, from its lock file;
#   - Confluent's Python client from PyPI, into tests/python/.venv, at the pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} from Debian"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -d tests/browser/node_modules/playwright-core ]]; then
  echo "installing playwright-core into tests/browser"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

venv=tests/python/.venv
if ! cmp -s tests/python/requirements.txt "$venv/requirements.txt"; then
  echo "installing confluent-kafka into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt "$venv/requirements.txt"
fi
