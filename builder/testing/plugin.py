"""arkbox's pytest plugin (entry point `pytest11`: `arkbox`): fixtures that build an
appliance from a config, boot it in the rig `arkbox try` uses, and hand it to the tests.

Inert unless a test asks for one of its fixtures: no autouse fixture, options all named
--arkbox-*, and the rig's modules are imported only when a fixture runs. The one thing it
does for every run: TESTCONTAINERS_RYUK_DISABLED defaults to true (the reaper's image
cannot be pulled where no registry answers; every fixture removes what it made instead).

Scopes: the build is made once per session per config (`arkbox_builds`); the rig, the
appliance and the backup server are per test module, because a module chooses its config
with the `arkbox_config` marker and its tests share one booted box
(docs/testing-your-appliance.md).
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import pytest

from builder.testing import choice
from firstboot.core import wait
from firstboot.core.config import DEFAULT_CONFIG_PATH
from firstboot.core.errors import ArkboxError

if TYPE_CHECKING:
    from builder.testing.boxes import ArkboxAppliance, ArkboxBackupServer, ArkboxRig, Built

DEFAULT_BACKUP_SERVER = DEFAULT_CONFIG_PATH.parent / "default-backup-server.yaml"
DEFAULT_TIMEOUT_S = 900.0
OUT_ENV = "ARKBOX_OUT"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("arkbox", "arkbox: test your appliance "
                                      "(docs/testing-your-appliance.md)")
    group.addoption(choice.OPTION, metavar="FILE", default=None,
                    help="the appliance.yaml to build and boot, unless a module's "
                         "arkbox_config marker names one (default: ini arkbox_config, else "
                         "arkbox's config/default.yaml)")
    group.addoption("--arkbox-out", metavar="DIR", default=None,
                    help=f"where builds go, one folder per config (default: ini arkbox_out, "
                         f"${OUT_ENV}, else out/pytest under the rootdir)")
    group.addoption("--arkbox-backup-server-config", metavar="FILE", default=None,
                    help="the backup server's config when the appliance backs up over "
                         "ssh:// (default: ini arkbox_backup_server_config, else "
                         "config/default-backup-server.yaml)")
    group.addoption("--arkbox-rebuild", action="store_true", help="build even when fresh")
    group.addoption("--arkbox-no-build", action="store_true",
                    help="never build: use what the out folder holds, stale or not")
    group.addoption("--arkbox-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                    help="how long first boot (and a restore) may take (default: 900)")
    group.addoption("--arkbox-keep", action="store_true",
                    help="leave each rig up (and a box whose first boot failed) to look at; "
                         "`arkbox try down --rig NAME --out DIR` removes one")
    parser.addini(choice.INI, "the appliance.yaml of modules without a marker (relative to "
                              "the ini file)", default="")
    parser.addini("arkbox_out", "where builds go (relative to the ini file)", default="")
    parser.addini("arkbox_backup_server_config", "the backup server's config (relative to "
                                                 "the ini file)", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{choice.MARKER}(path): the appliance.yaml this module's box is built "
                   "from (relative to the test module's directory)")
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def _ini_base(config: pytest.Config) -> Path:
    return config.inipath.parent if config.inipath is not None else config.rootpath


def _ini_choice(config: pytest.Config, name: str) -> choice.ConfigChoice | None:
    value = str(config.getini(name) or "")
    where = str(config.inipath) if config.inipath is not None else "the ini file"
    return choice.ConfigChoice(value, f"{name} in {where}", _ini_base(config)) if value else None


def _option_choice(config: pytest.Config, option: str) -> choice.ConfigChoice | None:
    value = config.getoption(option)
    return choice.ConfigChoice(str(value), f"the command line's {option}",
                               config.invocation_params.dir) if value else None


def _fail(error: ArkboxError) -> NoReturn:
    """An arkbox error as pytest shows it: what failed and what to do, no traceback."""
    hint = f"\n  hint: {error.hint}" if error.hint else ""
    pytest.fail(f"{type(error).__name__}: {error.message}{hint}", pytrace=False)


def out_base(config: pytest.Config) -> Path:
    option = _option_choice(config, "--arkbox-out") or _ini_choice(config, "arkbox_out")
    if option is not None:
        return option.path
    from_env = os.environ.get(OUT_ENV)
    return Path(from_env) if from_env else config.rootpath / "out" / "pytest"


BUILD_LOCK_TIMEOUT_S = 3600.0  # another session's build of the same out folder


def _lock_build(fd: int, out: Path) -> None:
    """Take the out folder's build lock, waiting while another pytest builds there."""

    def locked() -> bool | wait.NotYet:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return wait.NotYet(f"another pytest session is building into {out}")
        return True

    wait.until(f"the build lock of {out}", locked, BUILD_LOCK_TIMEOUT_S, interval_s=2,
               hint="is another pytest (or a killed one's child) still building? "
                    "`fuser` on the .lock file next to that folder names it")


class Builds:
    """One build per config per session (a failed one is not tried again)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.done: dict[Path, Built | ArkboxError] = {}

    def backup_server_config(self) -> Path:
        given = (_option_choice(self.config, "--arkbox-backup-server-config")
                 or _ini_choice(self.config, "arkbox_backup_server_config"))
        return choice.existing_config(given) if given else DEFAULT_BACKUP_SERVER

    def get(self, config_path: Path) -> Built:
        if config_path not in self.done:
            from builder.testing import boxes

            out = choice.out_dir_for(config_path, out_base(self.config))
            out.mkdir(parents=True, exist_ok=True)
            try:
                # One build at a time per out folder (pytest-xdist workers, two sessions).
                with (out.parent / f".{out.name}.lock").open("w") as lock:
                    _lock_build(lock.fileno(), out)
                    self.done[config_path] = boxes.build(
                        config_path, out, self.backup_server_config(),
                        rebuild=bool(self.config.getoption("--arkbox-rebuild")),
                        no_build=bool(self.config.getoption("--arkbox-no-build")))
            except ArkboxError as e:
                self.done[config_path] = e
        built = self.done[config_path]
        if isinstance(built, ArkboxError):
            _fail(built)
        return built


@pytest.fixture(scope="session")
def arkbox_builds(pytestconfig: pytest.Config) -> Builds:
    """The session's builds: `.get(config_path)` builds a config once (or reuses a fresh
    out folder, as `arkbox try` does). Needs a Docker Engine: skipped without one, failed
    in CI (CI=true), where a missing engine is a defect of the machine."""
    from builder.testing import boxes

    if (reason := boxes.engine_missing()) is not None:
        message = f"the arkbox fixtures need a running Docker Engine: {reason}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return Builds(pytestconfig)


@pytest.fixture(scope="module")
def arkbox_config(request: pytest.FixtureRequest) -> Path:
    """The module's appliance.yaml (absolute): its arkbox_config marker, else
    --arkbox-config, else the ini option arkbox_config, else arkbox's default config."""
    config = request.config
    try:
        marker = request.node.get_closest_marker(choice.MARKER)
        marked = choice.marker_choice(marker.args, request.path) if marker else None
        chosen = choice.choose(marked, _option_choice(config, choice.OPTION),
                               _ini_choice(config, choice.INI), DEFAULT_CONFIG_PATH)
        return choice.existing_config(chosen)
    except ArkboxError as e:
        _fail(e)


@pytest.fixture(scope="module")
def arkbox_build(arkbox_builds: Builds, arkbox_config: Path) -> Built:
    """The module's config built (once per session): `.config` (the model), `.out`,
    `.rootfs_tar`, `.manifest`, `.backup_server` (its config and out folder), `.seconds`."""
    return arkbox_builds.get(arkbox_config)


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def arkbox_rig(request: pytest.FixtureRequest, arkbox_build: Built) -> Iterator[ArkboxRig]:
    """The rig `arkbox try` makes for the module's config, first boot done: `.appliance_part`,
    `.backup_server_part`, `.ca_file`, `.first_boot`, `.disaster()`, `.down()`. Removed
    (containers, volumes, network: all labelled as its) after the module, also on
    Ctrl-C; SIGTERM and SIGHUP unwind like Ctrl-C while it is up."""
    from builder.testing import boxes

    config = request.config
    keep = bool(config.getoption("--arkbox-keep"))
    # pytest-xdist: each worker runs its own rig (a module's tests may be spread over them).
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    name = choice.rig_name_for(arkbox_build.config_path, arkbox_build.out) + \
        (f"-{worker}" if worker else "")
    try:
        rig = boxes.ArkboxRig(arkbox_build, name, float(config.getoption("--arkbox-timeout")))
        rig.up(keep_failed=keep)
    except ArkboxError as e:
        if keep:
            _tell(config, f"arkbox: the rig {name} is left up (--arkbox-keep); remove it: "
                          f"arkbox try down --rig {name} --out {arkbox_build.out}")
        _fail(e)
    previous = {sig: signal.signal(sig, _terminate_as_interrupt)
                for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield rig
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if keep:
            _tell(config, f"arkbox: the rig {name} is left up (--arkbox-keep); remove it: "
                          f"arkbox try down --rig {name} --out {arkbox_build.out}")
        else:
            with boxes.shielded():
                rig.down()


def _tell(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="module")
def arkbox_appliance(arkbox_rig: ArkboxRig) -> ArkboxAppliance:
    """The booted appliance, first boot done: `.installer(...)`, `.status()`, `.https(route,
    path)`, `.sh(...)`, `.exec(...)`, `.port(...)`, `.backup_now()`, `.name`, `.config`."""
    from builder.testing import boxes

    return boxes.ArkboxAppliance(arkbox_rig)


@pytest.fixture(scope="module")
def arkbox_backup_server(arkbox_rig: ArkboxRig) -> ArkboxBackupServer:
    """The rig's backup server: there when the config backs up over ssh://."""
    from builder.testing import boxes

    part = arkbox_rig.backup_server_part
    if part is None:
        pytest.fail(f"{arkbox_rig.built.config_path} backs up to no ssh:// repository: the "
                    "rig runs no backup server (set backup.repository: ssh://...)",
                    pytrace=False)
    return boxes.ArkboxBackupServer(arkbox_rig, part)
