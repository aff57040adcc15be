#!/usr/bin/env python3
"""Drive the serial console of `nvr-edge run` inside an emulated device from the host.

The VM's second serial port (x86: /dev/ttyS1; arm64 virt: virtio console /dev/hvc0) is a
unix socket on the host. This connects to it, waits until the console answers, sends the
technician's commands plus line noise, and prints one ok/FAIL line per expectation. It ends
the session with `log info`, which the recorder logs: the guest stops `run` when it sees it.

usage: console_driver.py SOCKET [TIMEOUT_SECS]
"""
import socket
import sys
import time

path = sys.argv[1]
budget = float(sys.argv[2]) if len(sys.argv) > 2 else 400
t0 = time.monotonic()
failures = []
transcript = bytearray()


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def left():
    return budget - (time.monotonic() - t0)


sock = None
while sock is None and left() > 0:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        sock = s
    except OSError:
        time.sleep(0.2)
if sock is None:
    check(False, f"console socket {path} appeared")
    sys.exit(1)
sock.settimeout(0.2)


def send(data):
    """Send all of `data`, waiting for the emulator to take it: under a loaded host QEMU can
    be slow to drain the socket, which is not a console failure (a 0.2 s send once failed
    CI that way)."""
    sock.settimeout(max(1.0, min(30.0, left())))
    try:
        sock.sendall(data)
    except socket.timeout:
        pass
    finally:
        sock.settimeout(0.2)


def read_until(want, secs):
    """Read until `want` shows up in what arrived since the call; returns that text."""
    start = len(transcript)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if want.encode() in transcript[start:]:
            break
        try:
            chunk = sock.recv(4096)
            if not chunk:
                break
            transcript.extend(chunk)
        except socket.timeout:
            pass
    return transcript[start:].decode(errors="replace")


def ask(line, want, secs=30):
    send(line + b"\r")
    reply = read_until(want, secs)
    shown = line[:40].decode(errors="replace").encode("unicode_escape").decode()
    check(want in reply, f"console: {shown!r} -> {want!r}" + ("" if want in reply else f" (got {reply[-200:]!r})"))
    return reply


# The recorder starts slowly under TCG: ask for the version until the console answers.
answered = False
while left() > 0 and not answered:
    send(b"version\r")
    answered = "nvr-edge 0." in read_until("nvr-edge 0.", 3)
check(answered, f"the console answered on the device's second serial port after {time.monotonic() - t0:.0f} s")
if answered:
    ask(b"help", "commands:")
    ask(b"status", "vivid0")
    ask(b"cams", "vivid1")
    ask(b"mem", "jemalloc arena")
    ask(b"events 3", "> ")
    ask(b"household", "members")
    ask(b"\x00\xff\xfe\x1b[A\x1b[31mhelp", "commands:")
    ask(b"B" * 1000, "line longer than")
    ask(b"clear-ring vivid0", "locked")
    ask(b"bogus", "unknown command")
    ask(b"version", "nvr-edge 0.")
    ask(b"log info", "log filter now info")
sock.close()
with open(path + ".transcript", "wb") as f:
    f.write(transcript)
print(f"{len(failures)} console checks failed" if failures else "all console checks passed")
sys.exit(1 if failures else 0)
