"""Which self-test rows an emulated run gates on.

Under emulation (qemu-user, TCG VMs) speed depends on the host running the emulator: the
same aarch64 self-test measured identity_fps 0.048 on one CI host and passed on another.
So emulated checks gate on what the emulated CPU computes (results, tiers, V4L2, the
console) and *report* the speed rows (time and rate units with a measured figure) without
failing on them. Speed is measured natively, in `--self-test` on the device and in
`cargo bench`. A speed row that measured nothing (its step failed) still gates.
"""
import math

SPEED_UNITS = {"ms", "fps", "clips/s"}


def is_speed(row):
    m = row.get("measured")
    return row.get("unit") in SPEED_UNITS and isinstance(m, (int, float)) and math.isfinite(m)


def failing(rows):
    """(rows that fail the check, speed rows below their emulation target: reported only)"""
    bad = [c for c in rows if not c.get("pass")]
    return [c for c in bad if not is_speed(c)], [c for c in bad if is_speed(c)]


def describe(rows):
    return ", ".join(f"{c['name']}={c.get('measured')} {c.get('unit')} (target {c.get('op')} {c.get('target')})" for c in rows)
