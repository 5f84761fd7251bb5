#!/usr/bin/env bash
# Makes sure the headless browser the console's end-to-end test drives
# (internal/console, through chromedp) is here: Debian's chromium package at
# /usr/bin/chromium, or the binary OUTBOX_CHROMIUM names. Installs it with
# apt-get when it can (as root on Debian/Ubuntu); otherwise fails at once
# saying exactly what to install.
set -euo pipefail

if [[ -n "${OUTBOX_CHROMIUM:-}" ]]; then
  if [[ -x "${OUTBOX_CHROMIUM}" ]]; then exit 0; fi
  echo "error: OUTBOX_CHROMIUM=${OUTBOX_CHROMIUM} is not an executable" >&2
  exit 1
fi

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found: installing Debian's chromium package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq chromium >&2
  [[ -x /usr/bin/chromium ]] && exit 0
fi

cat >&2 <<'MSG'
error: chromium is not installed (the console's browser test needs /usr/bin/chromium).
  Debian/Ubuntu:  sudo apt-get install -y chromium
or point the test at another Chromium or Chrome binary:
  export OUTBOX_CHROMIUM=/path/to/chromium
MSG
exit 1
