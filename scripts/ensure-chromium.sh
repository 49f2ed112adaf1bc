#!/usr/bin/env bash
# The UI tests drive Debian's Chromium headless. Install it when missing and we may (root + apt-get);
# otherwise say how, and let the browser tests explain themselves.
set -u
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the UI tests..."
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    && exit 0
fi
echo "chromium is not installed; the UI browser tests need it: sudo apt-get install chromium" >&2
exit 0
