#!/usr/bin/env python3
"""Each concern in its room: fail when code sits where it must not.

- `unsafe`, `#[target_feature]` and `std::arch` only in the kernel crates (`crates/`):
  the application, its tests and benches have none.
- `clap` only in `src/main.rs` and `src/cmds/`: domain modules know no command line.

Comments are not code: a line's `//` part is ignored. CI runs this.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = [
    (re.compile(r"\bunsafe\b|target_feature|std::arch\b|core::arch\b"),
     "unsafe or arch-specific code outside crates/",
     lambda rel: True),
    (re.compile(r"\bclap\b"),
     "clap outside src/main.rs and src/cmds/",
     lambda rel: rel.parts[0] == "src" and rel != pathlib.Path("src/main.rs")
     and rel.parts[:2] != ("src", "cmds")),
]

bad = 0
files = [p for d in ("src", "tests", "benches") for p in (ROOT / d).rglob("*.rs")] + [ROOT / "build.rs"]
for path in files:
    if not path.exists():
        continue
    rel = path.relative_to(ROOT)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        code = re.sub(r"//.*", "", line)
        code = re.sub(r'"(?:[^"\\]|\\.)*"', '""', code)
        for pattern, what, applies in RULES:
            if applies(rel) and pattern.search(code):
                print(f"FAIL {rel}:{n}: {what}: {line.strip()}")
                bad += 1
if bad:
    sys.exit(1)
print("ok   unsafe and arch-specific code only in crates/, clap only in src/main.rs and src/cmds/")
