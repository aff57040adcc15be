#!/usr/bin/env bash
# Soak: run `nvr-edge run` for MINUTES and sample what would show a leak: resident memory,
# jemalloc's allocated and resident bytes (the console's `mem`, over its socket), open file
# descriptors and threads, every SAMPLE seconds. Prints the samples and, at the end, the
# growth per hour of each (least-squares slope over the second half, after warm-up).
# Not part of CI (it takes as long as it is asked to); README gives a 30-minute run.
#
# usage: tests/soak.sh BINARY MINUTES [CONFIG]     (default config: two synthetic cameras
#        as the embedded default, X-CLIP on motion, recording on, data in a temp dir)
set -euo pipefail
bin=$(realpath "$1")
minutes=${2:-30}
sample=${SAMPLE:-10}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
if [ -n "${3:-}" ]; then
  cfg=$3
else
  cfg="$work/soak.toml"
  cat > "$cfg" <<TOML
[storage]
data_dir = "$work/data"
[console]
socket = "$work/console.sock"
[recording]
disk_budget_mb = 256
min_free_mb = 256
[log]
summary_interval_secs = 60
[[cameras]]
id = "cam0"
source = "synthetic"
width = 640
height = 480
fps = 30.0
[[cameras]]
id = "cam1"
source = "synthetic"
width = 640
height = 480
fps = 30.0
TOML
fi
sock=$(sed -n 's/^socket = "\(.*\)"/\1/p' "$cfg" | head -1)
"$bin" --config "$cfg" run 2> "$work/run.log" &
pid=$!
end=$(( $(date +%s) + minutes * 60 ))
echo "secs rss_kib jemalloc_allocated_mib jemalloc_resident_mib fds threads"
t0=$(date +%s)
: > "$work/samples"
while [ "$(date +%s)" -lt "$end" ] && kill -0 "$pid" 2>/dev/null; do
  sleep "$sample"
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
  threads=$(awk '/^Threads/ { print $2 }' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  mem=$(printf 'mem\r' | timeout 10 "$bin" console --socket "$sock" 2>/dev/null | tr -d '\r' || true)
  alloc=$(echo "$mem" | sed -n 's/.*allocated \([0-9.]*\) MiB.*/\1/p' | tail -1)
  res=$(echo "$mem" | sed -n 's/.*resident \([0-9.]*\) MiB.*/\1/p' | tail -1)
  line="$(( $(date +%s) - t0 )) $rss ${alloc:-nan} ${res:-nan} $fds $threads"
  echo "$line" | tee -a "$work/samples"
done
kill -INT "$pid" 2>/dev/null || true
wait "$pid" || true
python3 - "$work/samples" <<'PY'
import sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
if len(rows) < 4:
    sys.exit("too few samples")
half = rows[len(rows) // 2:]
names = ["rss_kib", "jemalloc_allocated_mib", "jemalloc_resident_mib", "fds", "threads"]
t = [r[0] for r in half]
mt = sum(t) / len(t)
print(f"growth per hour over the second half ({len(half)} samples, {t[0]:.0f}-{t[-1]:.0f} s):")
for i, name in enumerate(names, start=1):
    y = [r[i] for r in half]
    if any(v != v for v in y):
        print(f"  {name}: not sampled")
        continue
    my = sum(y) / len(y)
    slope = sum((a - mt) * (b - my) for a, b in zip(t, y)) / max(sum((a - mt) ** 2 for a in t), 1e-9)
    print(f"  {name}: first {rows[0][i]:g}, last {rows[-1][i]:g}, min {min(r[i] for r in rows):g}, max {max(r[i] for r in rows):g}, {slope * 3600:+.2f}/h")
PY
