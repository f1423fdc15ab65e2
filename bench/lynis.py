#!/usr/bin/env python3
"""Lynis hardening index of a stock trixie root fs vs arkbox's hardened one, side by side.

Builds (or reuses) two root fs tarballs:

  stock     plain `mmdebstrap --variant=apt` of the root fs stage's package list, as an
            admin would install it;
  hardened  the root fs stage's own build (same list + hardening.HARDENING_PACKAGES)
            with `apply_hardening` applied for the appliance role.

Each is imported into Docker and booted with systemd as PID 1 (the container rig of
DESIGN.md). Lynis and ssh-audit are installed into the running container for the audit
only (apt-get inside it), then `lynis audit system --quick --no-colors` runs and
ssh-audit scans the container's own sshd. Prints both hardening indexes, the ratio, the
warnings, and the tests whose points differ; writes the figures to WORK/results.json.

Usage: bench/lynis.py [--work DIR] [--rebuild] [--keep] [--ssh-port N]
       bench/lynis.py --tar OUT/NAME-rootfs.tar --label NAME   (one built image alone, e.g.
       a backup server, whose firewall and accounts the build lays)

Needs root (mmdebstrap, chroot), a Docker Engine and the Debian mirror. The container
shares the host kernel: the kernel-wide sysctls are the host's on both sides; the network
ones, which each container has its own of, are the image's own (see docs/hardening.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builder.pipeline import rootfs
from builder.pipeline.hardening import HARDENING_PACKAGES, HardeningVars, apply_hardening
from firstboot.core.execute import run

# Outside the builder's cache (/var/cache/arkbox), which the build tests scan for secret
# values: the stock root fs keeps the SSH host keys its openssh-server made.
WORK_DIR = Path("/var/cache/arkbox-bench/lynis")
ROLE = "appliance"
SAMPLE_VARS: dict[str, object] = {"admin_user": "ops", "ssh_port": 2222}
AUDIT_PACKAGES = ("lynis", "ssh-audit")
POLICY_FILE = Path(__file__).resolve().parents[1] / "tests/data/ssh-audit/arkbox-debian13.txt"
BOOT_TIMEOUT_S = 180
SOURCE_DATE_EPOCH = 1_735_689_600


# --- building the two root fs ----------------------------------------------------------


def stock_argv(out_tar: Path, packages: Sequence[str]) -> tuple[str, ...]:
    """A plain mmdebstrap of `packages`: Debian's defaults, nothing of arkbox."""
    return (
        "mmdebstrap", "--variant=apt", "--mode=root", "--format=tar",
        "--include=" + ",".join(packages),
        *rootfs.deb_cache_hooks(rootfs.DEB_CACHE_DIR),
        rootfs.SUITE, str(out_tar),
        *rootfs.apt_sources(rootfs.SUITE, rootfs.MIRROR, rootfs.SECURITY_MIRROR),
    )


def inputs_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_stock(work: Path, rebuild: bool) -> Path:
    packages = rootfs.package_list()
    out = work / f"stock-{inputs_key('stock', packages, rootfs.SUITE)}.tar"
    if out.exists() and not rebuild:
        print(f"stock root fs: reusing {out.name} (same package list)")
        return out
    partial = out.with_name(out.name + ".partial")
    started = time.monotonic()
    try:
        with rootfs.locked(rootfs.DEB_CACHE_DIR):
            run(stock_argv(partial, packages), on_line=_quiet, timeout=3600,
                env={"SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)})
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    print(f"stock root fs: built {out.name} in {time.monotonic() - started:.0f} s")
    return out


def _base_key() -> str:
    """The root fs stage's inputs: its package list and its code."""
    return inputs_key("base", rootfs.package_list(HARDENING_PACKAGES),
                      Path(rootfs.__file__).read_text())


def build_hardened(work: Path, rebuild: bool) -> Path:
    """The root fs stage's tarball, unpacked, hardened, packed again."""
    tree = Path(__file__).resolve().parents[1] / "image/hardening"
    tree_digest = [(str(p.relative_to(tree)), hashlib.sha256(p.read_bytes()).hexdigest())
                   for p in sorted(tree.rglob("*")) if p.is_file()]
    code = (Path(__file__).resolve().parents[1] / "builder/pipeline/hardening.py").read_bytes()
    base_key = _base_key()
    base = work / f"base-{base_key}.tar"
    out = work / f"hardened-{inputs_key(base_key, tree_digest, code.decode(), SAMPLE_VARS)}.tar"
    if out.exists() and not rebuild:
        print(f"hardened root fs: reusing {out.name} (same inputs)")
        return out
    started = time.monotonic()
    if rebuild or not base.exists():
        rootfs.build_rootfs_tar(base, source_date_epoch=SOURCE_DATE_EPOCH,
                                extra_packages=HARDENING_PACKAGES, work_dir=work)
    with tempfile.TemporaryDirectory(prefix="harden-", dir=work) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        run(("tar", "-C", root, "--numeric-owner", "--xattrs", "--xattrs-include=*",
             "-xf", base))
        changes = apply_hardening(root, HardeningVars(**SAMPLE_VARS), ROLE)  # type: ignore[arg-type]
        print(f"hardened root fs: apply_hardening made {len(changes)} changes")
        partial = out.with_name(out.name + ".partial")
        run(("tar", "-C", root, "--numeric-owner", "--xattrs", "--xattrs-include=*",
             "-cf", partial, "."))
    partial.replace(out)
    print(f"hardened root fs: built {out.name} in {time.monotonic() - started:.0f} s")
    return out


def prune(work: Path, keep: Sequence[Path]) -> None:
    """Delete tarballs of earlier inputs, so the work directory does not grow without end."""
    for tar in work.glob("*.tar"):
        if tar not in keep and tar.name.split("-")[0] in ("stock", "base", "hardened"):
            tar.unlink()


def _quiet(_line: str) -> None:
    return None


# --- booting and auditing --------------------------------------------------------------


# Sysctls the kernel keeps per network namespace: a container can be given its own.
NETNS_SYSCTL_PREFIXES = ("net.ipv4.", "net.ipv6.")


def parse_sysctl_conf(text: str) -> dict[str, str]:
    """key -> value of a sysctl.d file, later lines winning as in systemd-sysctl; a leading
    "-" (ignore when the key is missing) is dropped."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        settings[key.strip().lstrip("-")] = value.strip()
    return settings


def image_network_sysctls(tar: Path) -> dict[str, str]:
    """The per-namespace network sysctls the image's /etc/sysctl.d/*.conf set.

    systemd-sysctl applies them at boot on a real machine but skips itself in the rig
    (/proc/sys is read-only there), so `docker run --sysctl` sets them instead. An image
    without such files (the stock side) gets none."""
    # Exit 2 with "Not found in archive" when there is no such file: that is "none".
    found = run(("tar", "--extract", "--to-stdout", f"--file={tar}", "--wildcards",
                 "./etc/sysctl.d/*.conf"), check=False, timeout=600)
    return {key: value for key, value in parse_sysctl_conf(found.stdout).items()
            if key.startswith(NETNS_SYSCTL_PREFIXES)}


def systemd_container_argv(image: str, name: str,
                           sysctls: dict[str, str] | None = None) -> tuple[str, ...]:
    """`docker run` of a root fs with systemd as PID 1, as the rig allows (no --privileged).

    The host is cgroup v1, which trixie's systemd 257 refuses unless forced. For the
    inner dockerd: /var/lib/docker on a real file system (overlay2 cannot stack on the
    container's overlay), and route_localnet already on for new bridges, because
    `userland-proxy: false` makes dockerd set it and /proc/sys is read-only here
    (without it dockerd stops with "Unable to enable local routing for hairpin mode").
    `sysctls` are the image's network settings (image_network_sysctls).
    """
    given = [arg for key, value in sorted((sysctls or {}).items())
             for arg in ("--sysctl", f"{key}={value}")]
    return ("docker", "run", "-d", "--name", name, "--hostname", name, *given,
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "-v", "/var/lib/docker", "--sysctl", "net.ipv4.conf.default.route_localnet=1",
            "-e", "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1", "-e", "container=docker",
            image, "/sbin/init")


def image_name(name: str) -> str:
    return f"arkbox-bench/{name}:latest"


def boot(tar: Path, name: str) -> str:
    """Import `tar` and boot it as container `name`; returns the final system state."""
    image = image_name(name)
    remove(name)  # a leftover of an interrupted run
    run(("docker", "import", tar, image), timeout=600)
    run(systemd_container_argv(image, name, image_network_sysctls(tar)))
    return wait_booted(name)


def remove(name: str) -> None:
    """Remove container `name`, its volumes and its image (each import is 600 MB)."""
    run(("docker", "rm", "-f", "-v", name), check=False)
    run(("docker", "rmi", image_name(name)), check=False)


def wait_booted(name: str, timeout: float = BOOT_TIMEOUT_S) -> str:
    """Poll until systemd in `name` has finished booting; returns running or degraded."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        # Until systemd has its bus up, systemctl prints nothing to stdout.
        state = run(("docker", "exec", name, "systemctl", "is-system-running"),
                    check=False, timeout=60).stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(1)
    raise RuntimeError(f"{name} did not finish booting in {timeout:.0f} s: "
                       f"systemctl says {state!r}")


def in_container(name: str, script: str, *, timeout: float = 900, check: bool = True) -> str:
    return run(("docker", "exec", name, "sh", "-c", script), timeout=timeout, check=check).stdout


# Lynis tests that ask the kernel the rig does not boot, skipped on both sides (a profile
# of the audit tool, never of the image). Each is measured under qemu instead
# (docs/hardening.md).
RIG_SKIPPED_TESTS: dict[str, str] = {
    "KRNL-5830": "compares the running kernel (the container host's) with the image's "
                 "/boot: in the rig they always differ, and a reboot cannot change that",
}


def rig_profile() -> str:
    """Lynis's custom.prf for the rig: the skipped tests, each with its reason."""
    return "".join(f"# {reason}\nskip-test={test}\n"
                   for test, reason in RIG_SKIPPED_TESTS.items())


def skipped_note() -> str:
    return "skipped in the rig (both sides): " + "; ".join(
        f"{test} ({reason})" for test, reason in RIG_SKIPPED_TESTS.items())


def install_audit_tools(name: str) -> None:
    in_container(name, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                       "apt-get install -y -qq --no-install-recommends " + " ".join(AUDIT_PACKAGES))
    in_container(name, f"cat > /etc/lynis/custom.prf <<'EOF'\n{rig_profile()}EOF")


@dataclass
class Audit:
    """What Lynis and ssh-audit said about one booted root fs."""

    label: str
    boot_state: str
    failed_units: list[str]
    hardening_index: int
    tests_performed: int
    warnings: list[str]
    suggestions: int
    points: dict[str, tuple[int, int]] = field(repr=False)
    ssh_port: int = 22
    ssh_audit_fail: list[str] = field(default_factory=list)
    ssh_audit_warn: list[str] = field(default_factory=list)
    ssh_policy_passed: bool = False


def report_values(report: str, key: str) -> list[str]:
    """The values of `key` (or `key[]`) in a lynis-report.dat."""
    prefix = (key, key + "[]")
    return [line.split("=", 1)[1] for line in report.splitlines()
            if "=" in line and line.split("=", 1)[0] in prefix]


_TEST = re.compile(r"Performing test ID (\S+)")
_POINTS = re.compile(r"Hardening: assigned (?:partial number of hardening points \((\d+) of "
                     r"(\d+)\)|maximum number of hardening points for this item \((\d+)\))")


def lynis_points(log: str) -> dict[str, tuple[int, int]]:
    """Hardening points (got, max) per Lynis test, summed, from /var/log/lynis.log."""
    points: dict[str, tuple[int, int]] = {}
    test = "?"
    for line in log.splitlines():
        if m := _TEST.search(line):
            test = m.group(1)
        elif m := _POINTS.search(line):
            got, most = (int(m.group(1)), int(m.group(2))) if m.group(1) else \
                (int(m.group(3)), int(m.group(3)))
            old = points.get(test, (0, 0))
            points[test] = (old[0] + got, old[1] + most)
    return points


def ssh_audit_findings(output: str, level: str) -> list[str]:
    """The algorithms ssh-audit marks with [fail] or [warn]."""
    found = []
    for line in output.splitlines():
        if f"[{level}]" in line and (m := re.match(r"\((\w+)\) (\S+)", line)):
            found.append(f"{m.group(1)} {m.group(2)}")
    return sorted(set(found))


def audit(tar: Path, label: str, keep_logs: Path | None = None) -> Audit:
    name = f"arkbox-lynis-{label}"
    state = boot(tar, name)
    failed = in_container(name, "systemctl --failed --plain --no-legend | cut -d' ' -f1").split()
    install_audit_tools(name)
    in_container(name, "lynis audit system --quick --no-colors > /root/lynis.txt 2>&1",
                 timeout=1800)
    report = in_container(name, "cat /var/log/lynis-report.dat")
    log = in_container(name, "cat /var/log/lynis.log")
    if keep_logs is not None:
        (keep_logs / f"{label}-lynis-report.dat").write_text(report)
        (keep_logs / f"{label}-lynis.log").write_text(log)
        (keep_logs / f"{label}-lynis.txt").write_text(in_container(name, "cat /root/lynis.txt"))
    port_line = in_container(name, "sshd -T 2>/dev/null | grep '^port ' | head -1", check=False)
    port = int(port_line.split()[1]) if port_line.strip() else 22
    exempt_local_scans(name)
    policy = _policy_scan(name, port)
    scan = in_container(name, f"ssh-audit -n -p {port} 127.0.0.1", check=False)
    return Audit(
        label=label, boot_state=state, failed_units=failed,
        hardening_index=int(report_values(report, "hardening_index")[0]),
        tests_performed=len(report_values(report, "tests_executed")[0].split("|")) - 1
        if report_values(report, "tests_executed") else 0,
        warnings=report_values(report, "warning"),
        suggestions=len(report_values(report, "suggestion")),
        points=lynis_points(log), ssh_port=port,
        ssh_audit_fail=ssh_audit_findings(scan, "fail"),
        ssh_audit_warn=ssh_audit_findings(scan, "warn"),
        ssh_policy_passed=policy,
    )


def exempt_local_scans(name: str) -> None:
    """Let ssh-audit connect again and again: OpenSSH 10 penalises a source that connects
    without logging in (PerSourcePenalties), and would refuse the second scan. Done after
    Lynis ran, on both sides alike; a later drop-in, so it changes nothing else."""
    in_container(name, "echo 'PerSourcePenaltyExemptList 127.0.0.1,::1' "
                       "> /etc/ssh/sshd_config.d/99-bench-scans.conf && systemctl reload ssh")


def _policy_scan(name: str, port: int) -> bool:
    run(("docker", "cp", POLICY_FILE, f"{name}:/root/policy.txt"))
    result = run(("docker", "exec", name, "ssh-audit", "-n", "-P", "/root/policy.txt",
                  "-p", str(port), "127.0.0.1"), check=False)
    return result.returncode == 0 and "Passed" in result.stdout


# --- the report ------------------------------------------------------------------------


def side_by_side(stock: Audit, hardened: Audit) -> str:
    ratio = hardened.hardening_index / stock.hardening_index
    rows = [
        ("", "stock", "hardened"),
        ("Lynis hardening index", str(stock.hardening_index), str(hardened.hardening_index)),
        ("Lynis warnings", str(len(stock.warnings)), str(len(hardened.warnings))),
        ("Lynis suggestions", str(stock.suggestions), str(hardened.suggestions)),
        ("Lynis tests performed", str(stock.tests_performed), str(hardened.tests_performed)),
        ("boot state", stock.boot_state, hardened.boot_state),
        ("failed units", " ".join(stock.failed_units) or "-",
         " ".join(hardened.failed_units) or "-"),
        ("ssh-audit [fail]", str(len(stock.ssh_audit_fail)), str(len(hardened.ssh_audit_fail))),
        ("ssh-audit [warn]", str(len(stock.ssh_audit_warn)), str(len(hardened.ssh_audit_warn))),
        ("ssh-audit policy", _passed(stock.ssh_policy_passed),
         _passed(hardened.ssh_policy_passed)),
    ]
    lines = [f"{a:<24} {b:>28} {c:>28}" for a, b, c in rows]
    lines.append(f"{'ratio hardened/stock':<24} {ratio:>57.2f}")
    for audit_ in (stock, hardened):
        for warning in audit_.warnings:
            lines.append(f"  warning ({audit_.label}): {warning}")
    lines.append("")
    lines.append("Lynis tests whose points differ (got/max):")
    for test in sorted(set(stock.points) | set(hardened.points)):
        a, b = stock.points.get(test, (0, 0)), hardened.points.get(test, (0, 0))
        if a != b:
            lines.append(f"  {test:<12} {a[0]:>3}/{a[1]:<3} -> {b[0]:>3}/{b[1]:<3}")
    for audit_ in (stock, hardened):
        flagged = audit_.ssh_audit_fail + audit_.ssh_audit_warn
        if flagged:
            lines.append(f"ssh-audit flags ({audit_.label}): {', '.join(flagged)}")
    return "\n".join(lines)


def _passed(ok: bool) -> str:
    return "passed" if ok else "failed"


def audit_alone(tar: Path, label: str, work: Path, keep: bool) -> int:
    """One built image: its index, warnings, suggestions and points, into WORK/LABEL-*."""
    try:
        found = audit(tar, label, keep_logs=work)
    finally:
        if not keep:
            remove(f"arkbox-lynis-{label}")
    print(f"{label}: Lynis hardening index {found.hardening_index}, "
          f"{len(found.warnings)} warning(s), {found.suggestions} suggestion(s), "
          f"{found.tests_performed} tests; boot {found.boot_state}; ssh-audit policy "
          f"{_passed(found.ssh_policy_passed)}")
    for warning in found.warnings:
        print(f"  warning: {warning}")
    print(skipped_note())
    report = (work / f"{label}-lynis-report.dat").read_text()
    for suggestion in report_values(report, "suggestion"):
        print(f"  suggestion: {suggestion}")
    (work / f"{label}-results.json").write_text(json.dumps(asdict(found), indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="cache of the tarballs")
    parser.add_argument("--rebuild", action="store_true", help="build both root fs afresh")
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--ssh-port", type=int, default=int(str(SAMPLE_VARS["ssh_port"])),
                        help="admin SSH port of the hardened image (Lynis scores 22 lower)")
    parser.add_argument("--tar", type=Path, help="audit this built root fs tar alone")
    parser.add_argument("--label", default="built", help="its name in the logs (with --tar)")
    args = parser.parse_args(argv)
    SAMPLE_VARS["ssh_port"] = args.ssh_port
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tar is not None:
        return audit_alone(args.tar, args.label, args.work, keep=args.keep)
    stock_tar = build_stock(args.work, args.rebuild)
    hardened_tar = build_hardened(args.work, args.rebuild)
    prune(args.work, [stock_tar, hardened_tar, *args.work.glob(f"base-{_base_key()}.tar")])
    audits = []
    try:
        for tar, label in ((stock_tar, "stock"), (hardened_tar, "hardened")):
            started = time.monotonic()
            audits.append(audit(tar, label, keep_logs=args.work))
            print(f"{label}: booted and audited in {time.monotonic() - started:.0f} s")
    finally:
        if not args.keep:
            for label in ("stock", "hardened"):
                remove(f"arkbox-lynis-{label}")
    stock, hardened = audits
    print()
    print(side_by_side(stock, hardened))
    print(skipped_note())
    results: dict[str, object] = {a.label: asdict(a) for a in audits}
    results["skipped_in_the_rig"] = RIG_SKIPPED_TESTS
    results["ssh_port"] = args.ssh_port
    (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

