"""Load an appliance.yaml: parse, validate, check across fields and files, all at once."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from pathlib import Path

from pydantic import ValidationError

from firstboot.core.config.base import is_one_line
from firstboot.core.config.checked_parts import CheckedParts
from firstboot.core.config.messages import findings_from
from firstboot.core.config.model import Appliance
from firstboot.core.config.problems import ConfigInvalid, Finding, Problem
from firstboot.core.config.rules import check_rules, warning_rules
from firstboot.core.config.secrets import SecretRef, inspect_file, iter_secret_refs
from firstboot.core.config.yaml_source import LineIndex, YamlRejected, parse_yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "default.yaml"


def config_digest(path: Path) -> str:
    """sha256 (hex) of a config file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_config(
    path: Path,
    *,
    check_secrets: bool = True,
    secrets_from_seed: bool = False,
    known_recipes: Collection[str] | None = None,
) -> Appliance:
    """Read and validate `path`; raise ConfigInvalid listing every problem found.

    check_secrets: also check that referenced files (secrets, the CA bundle)
    exist, are readable and not empty; widely readable secret files and unset
    environment variables become warnings (`Appliance.warnings`).
    secrets_from_seed: on the box, before the `seed` step ran: a secret file that does
    not exist yet (or an {env: NAME} without its env/NAME file) is no problem, the seed
    brings it; every other check of check_secrets stays.
    known_recipes: when given, a service recipe outside it is a problem.
    """
    text, digest = _read(path)
    try:
        document = parse_yaml(text)
    except YamlRejected as rejected:
        raise ConfigInvalid(path, [rejected.problem]) from None
    findings = list(document.duplicates)
    appliance: Appliance | None
    try:
        appliance = Appliance.model_validate(document.data)
    except ValidationError as err:
        appliance = None
        findings.extend(findings_from(err, document.data, Appliance))
    valid_parts = CheckedParts.of(appliance) if appliance else CheckedParts.salvage(document.data)
    findings.extend(check_rules(valid_parts, known_recipes))
    warnings = warning_rules(valid_parts)
    if check_secrets:
        fatal, file_warnings = _check_files(valid_parts, appliance, document.data, path.parent,
                                       secrets_from_seed)
        findings.extend(fatal)
        warnings.extend(file_warnings)
    problems = _locate(findings, document.lines)
    located_warnings = _locate(warnings, document.lines)
    if problems:
        raise ConfigInvalid(path, problems, located_warnings)
    assert appliance is not None  # no problems means validation passed
    appliance.bind_source(path.resolve(), digest, located_warnings)
    return appliance


def _read(path: Path) -> tuple[str, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        hint = "arkbox validate with no argument checks the embedded default"
        raise ConfigInvalid(path, [Problem("", "file not found", None, hint)]) from None
    except OSError as err:
        raise ConfigInvalid(path, [Problem("", f"cannot read: {err.strerror}")]) from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        problem = Problem("", f"not UTF-8 text (byte {err.start})", line, "save it as UTF-8")
        raise ConfigInvalid(path, [problem]) from None
    return text, hashlib.sha256(data).hexdigest()


def _check_files(
    parts: CheckedParts, appliance: Appliance | None, raw: dict[str, object], base_dir: Path,
    secrets_from_seed: bool = False,
) -> tuple[list[Finding], list[Finding]]:
    fatal: list[Finding] = []
    warnings: list[Finding] = []
    sections: list[tuple[str, object]] = [
        ("mail", parts.mail),
        ("services", parts.services),
        ("backup", parts.backup),
        ("alerts", parts.alerts),
    ]
    for section, value in sections:
        for where, ref in iter_secret_refs(value, (section,)):
            if ref.env is not None and not _env_available(ref, base_dir, secrets_from_seed):
                warnings.append(
                    Finding(
                        (*where, "env"),
                        f"environment variable {ref.env} is not set here",
                        "set it where arkbox build runs, or the secret cannot be installed",
                    )
                )
            location = ref.location(base_dir)
            if location is None or ref.file is None:
                continue
            if secrets_from_seed and not location.exists():
                continue  # the seed step installs it, or says which seed is missing
            finding = inspect_file(location, ref.file, secret=True)
            if finding is not None:
                target = fatal if finding.fatal else warnings
                target.append(Finding((*where, "file"), finding.message, finding.hint))
    fatal = [parts.in_yaml(finding) for finding in fatal]
    warnings = [parts.in_yaml(finding) for finding in warnings]
    ca_bundle = appliance.tls.ca_bundle if appliance else _raw_ca_bundle(raw)
    if ca_bundle is not None:
        finding = inspect_file(base_dir / ca_bundle, ca_bundle, secret=False)
        if finding is not None:
            fatal.append(Finding(("tls", "ca_bundle"), finding.message, finding.hint))
    return fatal, warnings


def _env_available(ref: SecretRef, base_dir: Path, secrets_from_seed: bool) -> bool:
    """An {env: NAME} secret can be read: the variable is set, or (on the box) its
    env/NAME file exists, or the seed is still to bring that file."""
    assert ref.env is not None
    return ref.env in os.environ or ref.env_file(base_dir).is_file() or secrets_from_seed


def _raw_ca_bundle(raw: dict[str, object]) -> str | None:
    tls = raw.get("tls")
    bundle = tls.get("ca_bundle") if isinstance(tls, dict) else None
    # A path with a NUL cannot even be looked at (its field reports it).
    return bundle if isinstance(bundle, str) and bundle and is_one_line(bundle) else None


def _locate(findings: list[Finding], lines: LineIndex) -> list[Problem]:
    located = {finding.located(lines.line_of(finding.parts)) for finding in findings}
    return sorted(located, key=lambda p: (p.line or 0, p.path, p.message))
