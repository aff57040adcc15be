#!/usr/bin/env bash
# Build an initramfs: busybox, the vivid V4L2 driver and its dependencies, the nvr-edge
# binary, a config, and an init that runs SCRIPT (a shell snippet) and powers off.
# usage: initramfs.sh OUT.cpio.gz MODULES_DIR KVER BINARY CONFIG SCRIPT [BUSYBOX]
set -euo pipefail
out=$1 mods=$2 kver=$3 bin=$4 cfg=$5 script=$6 busybox=${7:-/bin/busybox}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# mktemp makes it 0700, and cpio carries that to the guest's /: only root could then reach
# anything (the unprivileged recorder could not even exec /bin/sh).
chmod 0755 "$root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc,lib/modules}
# The unit's user as deploy/nvr-edge.sysusers makes it on Debian (video and dialout are
# Debian's fixed groups 44 and 20), so the guest can run the recorder as the service does.
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nvr-edge:x:999:999:nvr-edge recorder:/tmp:/bin/sh
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
dialout:x:20:nvr-edge
video:x:44:nvr-edge
tty:x:5:
nvr-edge:x:999:
GROUP
cp "$busybox" "$root/bin/busybox"
cp "$bin" "$root/nvr-edge"
cp "$cfg" "$root/config.toml"
cp "$script" "$root/test.sh"
# vivid's module chain in load order, decompressed (busybox insmod reads plain .ko).
# NVR_VM_EXTRA_MODULES: more modules (and their dependencies) to load after it; built-in
# ones are skipped.
for mod in vivid ${NVR_VM_EXTRA_MODULES:-}; do
  modprobe -d "$mods" -S "$kver" --show-depends "$mod" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' > "$root/modules.order"
: > "$root/load.order"
while read -r m; do
  name=$(basename "$m"); name=${name%.xz}; name=${name%.zst}
  case "$m" in
    *.xz) xz -dc "$m" > "$root/lib/modules/$name" ;;
    *.zst) zstd -qdc "$m" > "$root/lib/modules/$name" ;;
    *) cp "$m" "$root/lib/modules/$name" ;;
  esac
  echo "$name" >> "$root/load.order"
done < "$root/modules.order"
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
# Loopback, as every booted system has it (systemd brings it up): the recorder's web page
# and the self-test's HTTP rows listen on it.
ip link set lo up
for m in $(cat /load.order); do
  case "$m" in
    vivid.ko) insmod /lib/modules/$m n_devs=2 node_types=0x1,0x1 ;;
    *) insmod /lib/modules/$m ;;
  esac
done
sleep 1
# Device nodes as Debian's udev leaves them (50-udev-default.rules), and /dev/hvc* as
# deploy/60-nvr-edge.rules sets it: devtmpfs alone makes them root 0600.
for d in /dev/video*; do chgrp 44 "$d"; chmod 0660 "$d"; done
for d in /dev/ttyS* /dev/ttyAMA* /dev/hvc*; do [ -e "$d" ] && chgrp 20 "$d" && chmod 0660 "$d"; done
echo "NVR-VM-BOOTED $(uname -m) $(getconf PAGESIZE 2>/dev/null) $(ls /dev/video* 2>/dev/null | tr '\n' ' ')"
. /test.sh
echo "NVR-VM-DONE"
poweroff -f
INIT
chmod +x "$root/init" "$root/nvr-edge"
( cd "$root" && find . | cpio -o -H newc --quiet ) | gzip -1 > "$out"
