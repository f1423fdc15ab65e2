"""Run a seeded random sample of the tests, each alone (`pytest NODEID`): all must pass.

A test that passes only after its neighbours cannot be re-run when it fails; this
check, run by scripts/test after the suite, finds one. It picks across unit,
integration and e2e tests; the counts keep its cost small (an e2e test alone builds
nothing when scripts/test passes ARKBOX_TEST_BUILT_SINCE, but boots its own box):

    ARKBOX_TEST_ALONE_UNIT         unit tests to run alone (default 12)
    ARKBOX_TEST_ALONE_INTEGRATION  integration tests (default 3)
    ARKBOX_TEST_ALONE_E2E          e2e tests (default 1; the VM tests are left out)
    ARKBOX_TEST_ALONE_SEED         the seed (default: a new one, printed)
    ARKBOX_TEST_ALONE_DEADLINE     epoch seconds: no test starts that would, at its kind's
                                   usual length, end after it (scripts/test sets it to its
                                   own start + 80 min, CI stopping at 90); those not
                                   started are named

Repeat a run with the seed it printed. Exit status 1 when any test failed alone.

A sweep runs every test of a kind alone instead of a sample, and can resume:

    scripts/test_alone.py --all e2e --ledger docs/alone-ledger.json

records each result (node id -> passed or failed, seconds, commit, date) in the ledger as
it goes, and skips the node ids the ledger already has as passed at this commit's tests
(the same test file content), so a sweep cut short goes on where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = str(Path(sys.executable).parent / "pytest")
KINDS = (("unit", 12), ("integration", 3), ("e2e", 1))
TEST_TIMEOUT_S = 1200  # one test alone; the slowest (an e2e rig test) takes ~5 min
# How long one test of a kind may take alone (generous): what the deadline reserves for it.
USUAL_S = {"unit": 60, "integration": 300, "e2e": 600}
# Too dear to run alone in every CI run: one VM test alone builds its image and boots one or
# two VMs under TCG (~15 min). Their fixtures boot what each needs; run one alone by hand.
LEFT_OUT = ("tests/e2e/test_vm_firstboot.py::", "tests/e2e/test_vm_backup_server.py::")
# Beside the test builds (tests/built.py), outside the checkout.
LOGS = Path(os.environ.get("ARKBOX_TEST_OUT", "/var/tmp/arkbox-test-out")) / "alone"  # noqa: S108


def node_ids(kind: str) -> list[str]:
    """Every test of tests/KIND, as pytest names them, in the order written."""
    result = subprocess.run([PYTEST, "--collect-only", "-q", "-p", "no:randomly",
                             f"tests/{kind}"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"test-alone: collecting tests/{kind} failed:\n{result.stdout[-3000:]}")
    return [line for line in result.stdout.splitlines()
            if "::" in line and not line.startswith(LEFT_OUT)]


def count(kind: str, default: int) -> int:
    return int(os.environ.get(f"ARKBOX_TEST_ALONE_{kind.upper()}", default))


def file_digest(node: str) -> str:
    """The test file's content digest: a ledger entry holds for that content only."""
    return hashlib.sha256((ROOT / node.split("::")[0]).read_bytes()).hexdigest()[:16]


def read_ledger(path: Path | None) -> dict[str, dict[str, object]]:
    return json.loads(path.read_text()) if path and path.is_file() else {}


def head_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30).stdout.strip()


def record(path: Path | None, ledger: dict[str, dict[str, object]], node: str, passed: bool,
           took: float, commit: str) -> None:
    if path is None:
        return
    ledger[node] = {"result": "passed" if passed else "failed", "seconds": round(took, 1),
                    "file": file_digest(node), "commit": commit,
                    "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")}
    path.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", choices=[kind for kind, _ in KINDS],
                        help="every test of this kind, in order, instead of a sample")
    parser.add_argument("--ledger", type=Path, help="record results here; skip passed ones")
    args = parser.parse_args()
    ledger = read_ledger(args.ledger)
    commit = head_commit()  # the checkout does not change during a run
    seed = int(os.environ.get("ARKBOX_TEST_ALONE_SEED") or random.SystemRandom().randrange(10**6))
    # Not for security: a reproducible sample.
    pick = random.Random(seed)  # noqa: S311
    chosen: list[tuple[str, str]] = []  # (kind, node id), the dearer kinds last
    if args.all:
        chosen = [(args.all, node) for node in node_ids(args.all)
                  if not (ledger.get(node, {}).get("result") == "passed"
                          and ledger[node].get("file") == file_digest(node))]
    else:
        for kind, default in KINDS:
            ids = node_ids(kind)
            chosen += [(kind, node)
                       for node in pick.sample(ids, min(count(kind, default), len(ids)))]
    print(f"\ntest-alone: seed {seed} (ARKBOX_TEST_ALONE_SEED={seed} repeats it); "
          f"{len(chosen)} tests, each alone", flush=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    started = time.monotonic()
    deadline = float(os.environ.get("ARKBOX_TEST_ALONE_DEADLINE") or "inf")
    not_started: list[str] = []
    for number, (kind, node) in enumerate(chosen, 1):
        if time.time() + USUAL_S[kind] > deadline:
            not_started.append(node)
            continue
        log = LOGS / f"{number:02d}.log"
        began = time.monotonic()
        # -p no:cacheprovider: one test's run must not steer the next (--lf, --ff).
        try:
            with log.open("w") as out:
                returncode = subprocess.run([PYTEST, "-p", "no:cacheprovider", node], cwd=ROOT,
                                            stdout=out, stderr=subprocess.STDOUT,
                                            timeout=TEST_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            returncode = -1
            with log.open("a") as out:
                out.write(f"\ntest-alone: killed after {TEST_TIMEOUT_S} s\n")
        took = time.monotonic() - began
        verdict = "ok" if returncode == 0 else f"FAILED (exit {returncode})"
        print(f"  {verdict:>6} {took:6.1f} s  {node}", flush=True)
        record(args.ledger, ledger, node, returncode == 0, took, commit)
        if returncode != 0:
            failed.append(node)
            print("    " + "\n    ".join(log.read_text().splitlines()[-40:]), flush=True)
    total = time.monotonic() - started
    # Worded so it is not taken for pytest's own closing line.
    ran = len(chosen) - len(not_started)
    print(f"test-alone: {ran - len(failed)} of {ran} tests ran alone "
          f"without failing, in {total:.0f} s (seed {seed}; logs in {LOGS})")
    for node in failed:
        print(f"test-alone: failed alone: {node}")
    for node in not_started:
        print(f"test-alone: not started, it might not end before the deadline "
              f"(ARKBOX_TEST_ALONE_DEADLINE): {node}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
