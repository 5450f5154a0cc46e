#!/usr/bin/env bash
# What scripts/demo needs on Debian 12 (a C toolchain for the bundled SQLite and libseccomp's headers for
# the build; busybox-static for the bundled image), installed only when missing. Run as root.
set -euo pipefail
packages=(gcc libc6-dev pkg-config libseccomp-dev busybox-static libnftables1)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
echo "demo-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
