"""`arkbox-installer update --fetch`: the unattended update (config `updates:`), run by
arkbox-update.timer.

  download  `updates.url` and `updates.url`.sig into /var/lib/arkbox/update-download,
            asking with the ETag / Last-Modified of the last fetch (an unchanged bundle
            is not downloaded again: 304);
  signature `ssh-keygen -Y verify` against `updates.signing_key` (namespace
            arkbox-update): a bundle that is not signed by that key is never opened;
  update    `update()` on it, with every rule of a hand-run update (refused when it is for
            another box or a downgrade, a backup first, a rollback on any failure).

The outcome of each fetch goes to /var/lib/arkbox/update-fetch.json (status and the
update_failed alert read it); the download is removed afterwards, whatever happened.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from firstboot.core.config.updates import Updates
from firstboot.core.context import Paths, utc_now
from firstboot.core.errors import EXIT_BAD_INPUT, EXIT_OK, ArkboxError, BadInputError
from firstboot.core.execute import CommandError, from_file, run
from firstboot.core.files import atomic_write
from firstboot.core.locks import held_or_refused
from firstboot.updates.apply import say
from firstboot.updates.record import FETCH_RECORD, ROLLED_BACK, fetch_record, load_record

SIGNATURE_NAMESPACE = "arkbox-update"
SIGNER = "arkbox-update"
DOWNLOAD_DIR = "update-download"
FETCH_LOCK = "update-fetch.lock"  # the download folder is one per box
READ_TIMEOUT_S = 60.0  # one read of the socket; a stalled server ends the fetch
DOWNLOAD_DEADLINE_S = 2 * 3600.0  # the whole bundle, on a slow line
SIGNATURE_LIMIT = 64 << 10
BUNDLE_LIMIT = 16 << 30
CHUNK = 1 << 20

UpdateFn = Callable[[Path], int]


@dataclass
class FetchRecord:
    """The last fetch, for status and the alert."""

    at: str
    url: str
    result: str  # "updated", "unchanged" (no new bundle), "refused", "failed"
    message: str
    exit_code: int
    etag: str | None = None
    last_modified: str | None = None


def fetch_and_update(settings: Updates, paths: Paths, update_bundle: UpdateFn,
                     out: Callable[[str], None] = say) -> int:
    """Download, check the signature, update. Returns the exit code (that of update()
    once the bundle is trusted; 2 for a bad signature; 1 when the download failed)."""
    if not settings.enabled or settings.url is None or settings.signing_key is None:
        raise BadInputError("unattended updates are off in this box's config",
                            hint="set updates.enabled, updates.url and updates.signing_key "
                                 "(docs/updates.md), or run: arkbox-installer update BUNDLE")
    with held_or_refused(paths.state / FETCH_LOCK, ArkboxError(
            "another fetch of the update bundle is running",
            hint="wait for it: systemctl status arkbox-update.service")):
        return _fetch_and_update(settings.url, settings.signing_key, paths, update_bundle,
                                 out)


def _fetch_and_update(url: str, signing_key: str, paths: Paths, update_bundle: UpdateFn,
                      out: Callable[[str], None]) -> int:
    folder = paths.state / DOWNLOAD_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    last = fetch_record(paths) or {}
    record = FetchRecord(at=utc_now().isoformat(timespec="seconds"), url=url,
                         result="failed", message="", exit_code=1,
                         etag=last.get("etag"), last_modified=last.get("last_modified"))
    try:
        bundle = folder / "bundle.tar"
        fresh = _download(url, bundle, BUNDLE_LIMIT, record, out)
        if not fresh:
            record.result, record.exit_code = "unchanged", EXIT_OK
            record.message = "the published bundle has not changed since the last fetch"
            out(record.message)
            return EXIT_OK
        _download(url + ".sig", folder / "bundle.tar.sig", SIGNATURE_LIMIT, None, out)
        verify_signature(bundle, folder / "bundle.tar.sig", signing_key, folder)
        out(f"{url}: signed by the key in updates.signing_key")
        record.exit_code = update_bundle(bundle)
        record.result = "updated" if record.exit_code == EXIT_OK else "failed"
        record.message = ("update applied (or already this build)" if record.exit_code == 0
                          else "the update failed: see the update's own record")
        if record.exit_code != EXIT_OK and (load_record(paths) or {}).get("result") != \
                ROLLED_BACK:
            # It failed before changing anything (the backup): the same bundle is tried
            # again next time. One that was rolled back waits for a new bundle.
            record.etag = record.last_modified = None
        return record.exit_code
    except BadInputError as err:
        record.result, record.exit_code = "refused", EXIT_BAD_INPUT
        record.message = err.message
        record.etag = record.last_modified = None  # fetch it again next time
        raise
    except ArkboxError as err:
        record.message = err.message
        record.etag = record.last_modified = None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        atomic_write(paths.state / FETCH_RECORD,
                     json.dumps(asdict(record), indent=2) + "\n", 0o644)


def _download(url: str, dest: Path, limit: int, record: FetchRecord | None,
              out: Callable[[str], None]) -> bool:
    """GET url into dest; False when the server says it has not changed (record's ETag /
    Last-Modified, when given, are sent and then updated)."""
    # The config allows http(s) URLs only (HttpUrl).
    request = urllib.request.Request(url, headers={"User-Agent": "arkbox-update"})  # noqa: S310
    if record is not None and record.etag:
        request.add_header("If-None-Match", record.etag)
    if record is not None and record.last_modified:
        request.add_header("If-Modified-Since", record.last_modified)
    deadline = time.monotonic() + DOWNLOAD_DEADLINE_S
    # No proxy from the environment: the box fetches from where its config says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=READ_TIMEOUT_S) as answer, dest.open("wb") as file:
            size = 0
            while chunk := answer.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ArkboxError(f"{url} is larger than {limit >> 20} MiB: not a bundle "
                                      "of this box", hint="check updates.url")
                if time.monotonic() > deadline:
                    raise ArkboxError(f"downloading {url} took longer than "
                                      f"{DOWNLOAD_DEADLINE_S / 3600:.0f} h; gave up",
                                      hint="the next scheduled run tries again")
                file.write(chunk)
            if record is not None:
                record.etag = answer.headers.get("ETag")
                record.last_modified = answer.headers.get("Last-Modified")
    except urllib.error.HTTPError as err:
        if err.code == 304 and record is not None:
            return False
        raise ArkboxError(f"{url}: the server answered HTTP {err.code} {err.reason}",
                          hint="is the bundle (and its .sig) published there? "
                               "check updates.url") from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ArkboxError(f"could not download {url}: {reason}",
                          hint="the next scheduled run tries again; check updates.url "
                               "and the box's network") from err
    out(f"downloaded {url} ({dest.stat().st_size >> 20} MiB)")
    return True


def verify_signature(bundle: Path, signature: Path, public_key: str, folder: Path) -> None:
    """BadInputError unless `signature` is `public_key`'s signature of `bundle`."""
    signers = folder / "allowed_signers"
    signers.write_text(f"{SIGNER} {public_key}\n")
    argv = ("ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", SIGNER,
            "-n", SIGNATURE_NAMESPACE, "-s", str(signature))
    try:
        result = run(argv, feed=from_file(bundle), check=False, timeout=600)
    except CommandError as err:
        raise ArkboxError(f"could not check the bundle's signature: {err.message}",
                          hint="is openssh-client installed on the box?") from err
    if result.returncode != 0:
        said = result.stderr.strip().splitlines()
        raise BadInputError(
            "the fetched bundle is not signed by updates.signing_key"
            + (f" ({said[-1]})" if said else "") + "; nothing was changed",
            hint="sign it with the key's private half: arkbox sign-update BUNDLE --key "
                 "KEY, and publish BUNDLE.sig beside it; or fix updates.signing_key")
