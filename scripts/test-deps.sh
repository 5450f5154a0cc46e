#!/usr/bin/env bash
# Installs what the integration and conformance tests need (Debian 12). Idempotent: apt-get update and
# install run only when a package is missing. Run as root.
set -euo pipefail

packages=(
  gcc libc6-dev runc crun busybox-static podman containerd skopeo umoci uidmap jq util-linux iproute2
  libseccomp-dev pkg-config
  docker-registry apache2-utils openssl curl tini
  acpica-tools e2fsprogs qemu-system-x86 cpio
  nftables iperf3 netavark aardvark-dns dnsutils
)

if [ "$(id -u)" -ne 0 ]; then
  echo "test-deps.sh: must run as root" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "test-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
