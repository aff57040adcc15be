#!/usr/bin/env python3
"""Load test of the web API on loopback, bounded in count and time.

Starts `nvr-edge run` (the release binary) on two synthetic cameras, then for --seconds
runs --clients threads polling /api/stats and /api/events (alternately, as the page's
status and events views do) and --streams clients reading live MJPEG streams. Prints
requests/s, latency p50/p99/max, errors, stream frame rates, and each camera's capture
rate over the run against its configured rate. Exit status 1 when a request failed or a
camera's capture fell below 95% of its rate.

    cargo build --release && python3 tools/http_load.py [--binary target/release/nvr-edge]

Standard library only. Figures go to README (Benchmarks); this is not a test: a loaded
machine gives other figures.
"""

import argparse
import http.client
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time

CONFIG = """
[storage]
data_dir = "{dir}"
[identity]
enabled = false
[http]
bind = "127.0.0.1:0"
max_streams = 4
stream_fps = 10.0
max_requests = 64
[[cameras]]
id = "door"
source = "synthetic"
width = 640
height = 480
fps = {fps}
[[cameras]]
id = "yard"
source = "synthetic"
width = 640
height = 480
fps = {fps}
"""


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, body
    finally:
        c.close()


def capture_frames(port):
    import json

    status, body = get(port, "/api/stats")
    assert status == 200, status
    return {c["id"]: c["capture"]["frames"] for c in json.loads(body)["cameras"]}


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(here, "..", "target"))
    ap.add_argument("--binary", default=os.path.join(target, "release", "nvr-edge"))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--fps", type=float, default=15.0)
    a = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    cfg = os.path.join(tmp.name, "c.toml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(dir=tmp.name, fps=a.fps))
    proc = subprocess.Popen(
        [a.binary, "--config", cfg, "run"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, NO_COLOR="1"),
    )
    port = None
    deadline = time.time() + 60
    while port is None and time.time() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        m = re.search(r"http listening addr=127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
    if port is None:
        proc.kill()
        sys.exit("no `http listening` line from nvr-edge")
    # Drain the log so the process never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    time.sleep(2.0)  # cameras up

    stop = threading.Event()
    lat, errors, lock = [], [], threading.Lock()

    def poller(i):
        paths = ["/api/stats", "/api/events?limit=50"]
        n = i
        while not stop.is_set():
            path = paths[n % 2]
            n += 1
            t0 = time.perf_counter()
            try:
                status, _ = get(port, path)
                ok = status == 200
            except OSError as e:
                ok, status = False, str(e)
            dt = (time.perf_counter() - t0) * 1e3
            with lock:
                lat.append(dt)
                if not ok:
                    errors.append(f"{path}: {status}")

    frames = [0] * a.streams

    def streamer(i):
        cam = ["door", "yard"][i % 2]
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", f"/api/cameras/{cam}/stream.mjpeg")
        r = c.getresponse()
        if r.status != 200:
            with lock:
                errors.append(f"stream {cam}: {r.status}")
            return
        while not stop.is_set():
            chunk = r.read1(65536)
            if not chunk:
                break
            frames[i] += chunk.count(b"--nvrframe")
        c.close()

    before = capture_frames(port)
    t0 = time.time()
    threads = [threading.Thread(target=poller, args=(i,)) for i in range(a.clients)]
    threads += [threading.Thread(target=streamer, args=(i,)) for i in range(a.streams)]
    for t in threads:
        t.start()
    time.sleep(a.seconds)
    stop.set()
    for t in threads:
        t.join(timeout=15)
    secs = time.time() - t0
    after = capture_frames(port)
    proc.terminate()
    proc.wait(timeout=20)

    lat.sort()
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
    print(f"cpu: {cpu_model()} ({os.cpu_count()} cpus)")
    print(
        f"{a.clients} clients polling /api/stats and /api/events, {a.streams} live streams, {secs:.1f} s"
    )
    print(
        f"requests: {len(lat)} ({len(lat) / secs:.0f}/s), latency p50 {pct(0.5):.2f} ms, "
        f"p99 {pct(0.99):.2f} ms, max {lat[-1] if lat else float('nan'):.2f} ms, errors {len(errors)}"
    )
    for e in errors[:5]:
        print(f"  error: {e}")
    print("streams: " + ", ".join(f"{n / secs:.1f} frames/s" for n in frames))
    low = False
    for cam, n in after.items():
        fps = (n - before[cam]) / secs
        ok = fps >= 0.95 * a.fps
        low |= not ok
        print(f"capture {cam}: {fps:.2f} fps of {a.fps:.0f} ({'ok' if ok else 'LOW'})")
    sys.exit(1 if errors or low else 0)


if __name__ == "__main__":
    main()
