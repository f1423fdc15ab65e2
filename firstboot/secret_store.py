"""Where the box keeps the secrets its services use, below /srv/arkbox/secrets: copies of
the config's secrets under config/, secrets made on the box under generated/. The
`secrets` step writes them; mail, services and the CLI read them. No value is logged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from firstboot.core.config import Appliance, SecretRef
from firstboot.core.config.secrets import iter_secret_refs
from firstboot.core.context import Paths
from firstboot.core.step import StepFailed


def stored_name(ref: SecretRef) -> PurePosixPath:
    """Where a config secret's copy lives, relative to the secrets directory."""
    if ref.env is not None:
        return PurePosixPath("config", "env", ref.env)
    assert ref.file is not None
    path = PurePosixPath(ref.file)
    if ".." in path.parts:
        raise StepFailed(f"secret file {ref.file!r} points outside the config's directory",
                         hint="keep secret files next to the config, e.g. secrets/NAME")
    if path.is_absolute():
        return PurePosixPath("config", "abs", *path.parts[1:])
    return PurePosixPath("config", *path.parts)


def stored_path(paths: Paths, ref: SecretRef) -> Path:
    """The copy of a config secret under /srv/arkbox/secrets (mount it, do not log it)."""
    return paths.secrets / stored_name(ref)


def generated_path(paths: Paths, name: str) -> Path:
    return paths.secrets / "generated" / name


def read_stored(paths: Paths, ref: SecretRef) -> str:
    """A config secret's value as stored by this step (one trailing newline dropped)."""
    text = stored_path(paths, ref).read_text(encoding="utf-8")
    return text.removesuffix("\n").removesuffix("\r")


def service_secret_refs(config: Appliance) -> Iterator[tuple[str, SecretRef]]:
    """The config's secrets the services (and mail) use, each with its path in the config."""
    sections: list[tuple[str, object]] = [("services", config.services)]
    if config.mail.enabled:
        sections.append(("mail", config.mail))
    seen: set[PurePosixPath] = set()
    for section, value in sections:
        for where, ref in iter_secret_refs(value, (section,)):
            name = stored_name(ref)
            if name not in seen:
                seen.add(name)
                yield ".".join(str(part) for part in where), ref
