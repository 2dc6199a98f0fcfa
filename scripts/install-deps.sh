#!/usr/bin/env bash
# Installs the Debian packages the tests start for real: dockerd (docker.io),
# the registry (docker-registry), busybox for test images, htpasswd
# (apache2-utils), ip (iproute2) and, for the image test, debootstrap.
# Installs only what is missing.
set -euo pipefail

declare -A need=(
  [dockerd]=docker.io
  [containerd]=containerd
  [runc]=runc
  [docker-registry]=docker-registry
  [htpasswd]=apache2-utils
  [ip]=iproute2
  # test/image: the runtime base is made with debootstrap; dockerd runs ps
  # for the container listing; nsenter and unshare come with util-linux.
  [debootstrap]=debootstrap
  [ps]=procps
  [nsenter]=util-linux
  [unshare]=util-linux
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# busybox-static, not busybox: test images copy the binary into a layer.
if ! dpkg -s busybox-static >/dev/null 2>&1; then missing+=(busybox-static); fi
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing packages: ${missing[*]}" >&2
  echo "install them (as root: apt-get install -y ${missing[*]}) and run again" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
# Keep package scripts from starting docker or the registry as host services
# during the install; the tests start their own private ones.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
