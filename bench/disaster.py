"""Benchmark the disaster: a blank appliance boots and restores itself until every service is
healthy, against one raw `borg extract` of the same archive over SSH, in the same run.

Boots the built appliance (config/default.yaml, backups on) and the backup-server role in a
rig (tests/built.py builds them once, or reuses them with ARKBOX_TEST_REUSE_BUILD=1),
writes a generated data set into the paused services' volumes of box A (`bench` folders
the applications do not read: the wiki's media, beside Radicale's collection root), backs
A up with `arkbox-installer backup`, destroys it, and times:

  arkbox  blank box B: container creation -> first boot done, restored and every service
          healthy (the time the installer wrote its done marker, result ok)
  raw     on B afterwards: `borg extract` of the same archive into an empty directory

Targets: arkbox <= raw + 30 s (issue 5), <= raw + 10 s (issue 19).

Run as root on a machine prepared by scripts/setup:
    .venv/bin/python bench/disaster.py [--mib 2048] [--files 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from restore_checks import sh_quote  # noqa: E402
from rig_fixtures import admin_key, appliance_image, check, installer, rig_up  # noqa: E402
from test_backup_drill import BORG_ENV  # noqa: E402
from test_backup_restore import add_backup_server, boot, destroy, full_config, step  # noqa: E402

from builder.rig.parts import BOX  # noqa: E402

RIG_OCTET = 171
GOAL_OVERHEAD_S = 10.0  # issue 19: restore overhead above one raw borg extract
# Where the data set goes: folders of the paused services' volumes no application reads.
TARGETS = ("/srv/arkbox/volumes/calendar/collections/bench",
           "/srv/arkbox/volumes/wiki/data/media/bench")
# Runs inside the appliance (python3 comes with borg): half text, half random bytes.
GENERATE = """
import os, random, sys
mib, files, targets = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rng = random.Random(5)
per_file = max(1, (mib << 20) // files)
words = ("arkbox", "borg", "restore", "calendar", "wiki", "backup")
for index in range(files):
    folder = os.path.join(targets[index % len(targets)], f"d{index % 97:02d}")
    os.makedirs(folder, exist_ok=True)
    if index % 2:
        content = os.urandom(per_file)
    else:
        content = " ".join(rng.choice(words) for _ in range(per_file // 7 + 1)).encode()
    with open(os.path.join(folder, f"f{index}.bin"), "wb") as out:
        out.write(content[:per_file])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=2048)
    parser.add_argument("--files", type=int, default=20000)
    args = parser.parse_args()
    config = full_config(admin_key())
    with rig_up("bench-disaster", RIG_OCTET) as rig:
        image = appliance_image(rig)
        add_backup_server(rig)
        a, status_a = boot(rig, "a", image, config)
        if status_a["result"] != "ok":
            raise SystemExit(f"A did not come up: {status_a['failures']}")
        started = time.monotonic()
        check(a, f"python3 -c {sh_quote(GENERATE)} {args.mib} {args.files} {' '.join(TARGETS)}")
        generate_s = time.monotonic() - started
        started = time.monotonic()
        code, out = installer(a, "backup")
        backup_s = time.monotonic() - started
        if code != 0:
            raise SystemExit(f"backup of A failed: {out}")
        summary = out.strip().splitlines()[-1]
        archive = summary.split(":")[0]
        destroy(rig, a)

        started = time.time()
        b, status_b = boot(rig, "b", image, config)
        seen_s = time.time() - started
        # When the done marker was written (one clock: the container shares the host's
        # kernel), not when the bench's poll of it came round.
        done_at = check(b, f"python3 -c 'import os; print(os.stat(\"{BOX.done_marker}\")"
                           ".st_mtime)'")
        arkbox_s = float(done_at.strip()) - started
        if status_b["result"] != "ok":
            raise SystemExit(f"B did not come up: {status_b['failures']}")
        restore = step(status_b, "restore")
        started = time.monotonic()
        check(b, f"mkdir /var/tmp/raw && cd /var/tmp/raw && {BORG_ENV} borg extract ::{archive}")
        raw_s = time.monotonic() - started
        size = check(b, "du -sm /var/tmp/raw | cut -f1").strip()
    print(f"data set: {args.files} files, {args.mib} MiB (generated in {generate_s:.0f} s); "
          f"backup of A {backup_s:.0f} s: {summary}")
    print(f"B restore step: {restore.get('summary')} ({restore.get('seconds', '?')} s)")
    for name, status in (("A (fresh)", status_a), ("B (restore)", status_b)):
        print(f"{name} steps: " + ", ".join(f"{s['name']} {s.get('seconds') or 0:.1f}"
                                             for s in status["steps"]))
    overhead = arkbox_s - raw_s
    print(f"blank boot to healthy  arkbox {arkbox_s:6.1f} s   raw borg extract {raw_s:6.1f} s "
          f"({size} MiB)   ratio {arkbox_s / raw_s:.2f}x   (the bench's poll saw it after "
          f"{seen_s:.1f} s)")
    print(f"restore overhead (arkbox - raw) {overhead:.1f} s: issue 19's goal ≤ "
          f"{GOAL_OVERHEAD_S:.0f} s {'met' if overhead <= GOAL_OVERHEAD_S else 'NOT met'}; "
          f"issue 5's ≤ 30 s {'met' if overhead <= 30 else 'NOT met'}")


if __name__ == "__main__":
    main()
