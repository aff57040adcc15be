#!/usr/bin/env python3
"""Assert on the JSON reports an emulated device printed on its serial console.

usage: check.py CONSOLE_LOG [--vanish] [--console] [--page-size BYTES]
"""
import json
import re
import sys

from rows import describe, failing

log = open(sys.argv[1], errors="replace").read().replace("\r", "")
reports = {m.group(1): json.loads(m.group(2)) for m in re.finditer(r"NVR-JSON-BEGIN (\w+)\n(\{.*\})\n", log)}
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


boot = re.search(r"NVR-VM-BOOTED (\S+) (.*)", log)
check(boot is not None, "the device booted")
check("selftest" in reports, "the boot self-test printed its JSON report")
r = reports.get("selftest", {"checks": [], "cameras": [], "system": {}})
sysinfo = r.get("system", {})
print(f"     {sysinfo.get('arch')} kernel {sysinfo.get('kernel')}, {sysinfo.get('page_size')} byte pages, SIMD {sysinfo.get('simd_kernel')}")
want_page = int(sys.argv[sys.argv.index("--page-size") + 1]) if "--page-size" in sys.argv else None
if want_page:
    check(sysinfo.get("page_size") == want_page, f"running on {want_page}-byte pages")
if "--tier" in sys.argv:
    # The emulated CPU stands for a board class: its kernels must be that class's.
    tier = sys.argv[sys.argv.index("--tier") + 1]
    check(sysinfo.get("tract_isa") == tier, f"tract's kernels at the {tier} tier ({sysinfo.get('tract_isa')})")
    want_simd = {"fma": "avx2+fma", "neon": "neon", "fp16": "neon"}.get(tier)
    check(sysinfo.get("simd_kernel") == want_simd, f"nvr-edge's matching kernel {want_simd} ({sysinfo.get('simd_kernel')})")
    want_dense = {"fma": "avx2+fma (nvr-edge)"}.get(tier, "tract")
    check(sysinfo.get("dense_kernel") == want_dense, f"dense and 1x1 layers on {want_dense} kernels ({sysinfo.get('dense_kernel')})")
rows = {(c["name"], c["camera"]): c for c in r["checks"]}
for cam in ("vivid0", "vivid1"):
    rep = next((c for c in r["cameras"] if c["id"] == cam), None)
    src = (rep or {}).get("stats", {}).get("source") or {}
    check(src.get("driver") == "vivid", f"{cam}: opened through V4L2 (driver {src.get('driver')!r}, {src.get('detail')})")
    granted = src.get("fps") or 0
    fps = rows.get(("camera_fps", cam), {})
    # The self-test's own verdict (98 % of the granted rate over its 4 s window, where two
    # frames missed already fail) is reported; what is checked is that the capture loop
    # kept up with vivid within 10 %: under full emulation, whether the capture thread is
    # starved for more than its four driver buffers while the models run on the other
    # vCPUs is the emulator host's speed (one CI run: 14.52 fps on the A76 device, the
    # rerun 15.01 with no frame skipped).
    measured = fps.get("measured") or 0
    check(measured >= 0.9 * min(30.0, granted) > 0,
          f"{cam}: camera_fps {measured} against 90 % of the driver's {granted} "
          f"(self-test verdict at {fps.get('target')}: {'pass' if fps.get('pass') else 'below'}; {fps.get('detail')})")
    check(abs(fps.get("target", 0) - min(30.0, granted) * 0.98) < 1e-6, f"{cam}: fps target follows the granted rate")
    check(rows.get(("camera_frames", cam), {}).get("pass") is True, f"{cam}: frames received")
# The rest of the rows' speed is the emulator host's, so it is reported, not checked
# (rows.py).
others, slow = failing(c for c in r["checks"] if c["camera"] is None)
check(not others, "every device-independent row but emulated speed passes" + (": " + describe(others) if others else ""))
if slow:
    print("note speed under emulation depends on the host and is reported, not checked: " + describe(slow))

if "--vanish" in sys.argv:
    check("vanish" in reports, "the vanish run printed its JSON report")
    v = reports.get("vanish", {"cameras": []})
    cams = {c["id"]: c for c in v["cameras"]}
    # One vivid platform device carries both nodes: unbinding it takes both cameras away.
    for cam in ("vivid0", "vivid1"):
        st = cams.get(cam, {}).get("stats", {})
        check(st.get("reconnects", 0) >= 1, f"{cam} reconnected after it vanished (reconnects {st.get('reconnects')}, last error {st.get('last_error')!r})")
        check(st.get("state") == "streaming", f"{cam} streams again (state {st.get('state')})")
        age = st.get("last_frame_age_ms")
        check(age is not None and 0 <= age < 1000, f"{cam} delivers frames again (last frame {age} ms ago)")
        check(cams.get(cam, {}).get("ring", {}).get("len", 0) > 0, f"{cam}'s ring kept its frames through the outage")

if "--console" in sys.argv:
    stopped = re.search(r"NVR-VM run stopped rc=(\d+)", log)
    check(stopped is not None and stopped.group(1) == "0",
          f"`nvr-edge run` with the serial console stopped cleanly on SIGTERM ({stopped.group(0) if stopped else 'no stop marker'})")

print(f"{len(failures)} failed" if failures else "all device checks passed")
sys.exit(1 if failures else 0)
