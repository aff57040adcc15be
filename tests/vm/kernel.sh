#!/usr/bin/env bash
# Fetch and unpack Debian's current kernel for ARCH (amd64 | arm64) into the cache, once.
# Prints: KERNEL_IMAGE MODULES_DIR KVER
set -euo pipefail
arch=${1:?amd64 or arm64}
flavour=${2:-$arch}            # e.g. arm64-16k
cache=${NVR_VM_CACHE:-/var/cache/nvr-edge/vm}
mkdir -p "$cache"
meta="linux-image-$flavour"
[ "$arch" = amd64 ] || meta="$meta:$arch"
# The metapackage names the current kernel package, so this keeps working as Debian
# publishes new point releases.
pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || { echo "cannot resolve $meta (apt-get update? dpkg --add-architecture $arch?)" >&2; exit 1; }
pkg=${pkg%%:*}
dir="$cache/$pkg"
if [ ! -f "$dir/.done" ]; then
  rm -rf "$dir" && mkdir -p "$dir"
  ( cd "$cache" && apt-get download -q "$pkg${arch:+:$arch}" >/dev/null 2>&1 || apt-get download -q "$pkg" >/dev/null )
  dpkg -x "$cache/${pkg}"_*.deb "$dir"
  kver=$(ls "$dir/lib/modules")
  depmod -b "$dir" "$kver"
  touch "$dir/.done"
fi
kver=$(ls "$dir/lib/modules")
image=$(ls "$dir"/boot/vmlinu* | head -n 1)
echo "$image $dir $kver"
