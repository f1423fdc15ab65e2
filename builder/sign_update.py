"""`arkbox sign-update BUNDLE --key KEY`: sign an update bundle for unattended updates.

Writes BUNDLE.sig with `ssh-keygen -Y sign` (namespace arkbox-update), the signature a
box with `updates.enabled` requires before it opens a fetched bundle (docs/updates.md).
The bundle is read whole and checked against its own index first, so a truncated copy
is never signed. With --config, the new signature is checked against that config's
updates.signing_key, so a key that does not match is found here rather than on the box.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from firstboot.core.config import load_config
from firstboot.core.errors import EXIT_OK, ArkboxError, BadInputError
from firstboot.core.execute import CommandError, run
from firstboot.updates.bundle import verify_bundle
from firstboot.updates.fetch import SIGNATURE_NAMESPACE, verify_signature

# ssh-keygen cannot ask for a passphrase here (no terminal): such a key is used through
# ssh-agent, which answers at once.
SIGN_TIMEOUT_S = 300.0


def sign_bundle(bundle: Path, key: Path, config: Path | None = None) -> int:
    verify_bundle(bundle)  # BadInputError (exit 2) for a damaged or truncated bundle
    if not key.is_file():
        raise BadInputError(f"{key}: no such key file",
                            hint="the private key, or KEY.pub with the key in ssh-agent; "
                                 "make one with: ssh-keygen -t ed25519 -f KEY")
    signature = bundle.with_name(bundle.name + ".sig")
    signature.unlink(missing_ok=True)  # ssh-keygen would ask before overwriting it
    argv = ("ssh-keygen", "-Y", "sign", "-f", str(key), "-n", SIGNATURE_NAMESPACE,
            str(bundle))
    try:
        result = run(argv, check=False, timeout=SIGN_TIMEOUT_S)
    except CommandError as err:
        raise ArkboxError(f"signing {bundle} failed: {err.message}",
                          hint="a key with a passphrase is used through ssh-agent: "
                               "ssh-add KEY, then --key KEY.pub") from err
    if result.returncode != 0 or not signature.is_file():
        said = result.stderr.strip().splitlines()
        raise ArkboxError(f"ssh-keygen could not sign {bundle}"
                          + (f": {said[-1]}" if said else ""),
                          hint="is KEY an OpenSSH private key (or KEY.pub, the key in "
                               "ssh-agent)?")
    if config is not None:
        public_key = load_config(config).updates.signing_key
        if public_key is None:
            raise BadInputError(f"{config}: updates.signing_key is not set",
                                hint="put the line of KEY.pub there, or sign without "
                                     "--config")
        with tempfile.TemporaryDirectory() as folder:
            verify_signature(bundle, signature, public_key, Path(folder))
        print(f"{signature}: matches updates.signing_key of {config}")
    print(f"wrote {signature}; publish it beside {bundle.name} at updates.url")
    return EXIT_OK
