"""`arkbox seed`: every secret a box of the role needs, byte-exact, bound to the config;
0600 and atomic; published values refused; nothing of a value ever printed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.seed import make_seed, write_seed_file
from firstboot.core.config import DEFAULT_CONFIG_PATH, load_config
from firstboot.core.errors import BadInputError
from firstboot.core.seed import check_fits, decode, needed_refs, ref_key

ROOT = Path(__file__).resolve().parents[2]
ARKBOX = str(Path(sys.executable).parent / "arkbox")
SECRETS = ROOT / "config/secrets"
PUBLISHED = [p.read_text().strip() for p in SECRETS.iterdir() if p.name != "README.md"]


def arkbox(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ARKBOX, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def own_config(tmp_path: Path, domain: str = "example.org") -> Path:
    """The default config for a real domain, with freshly made secrets of its own."""
    text = DEFAULT_CONFIG_PATH.read_text().replace("domain: arkbox.test", f"domain: {domain}")
    (tmp_path / "secrets").mkdir(mode=0o700)
    for source in SECRETS.iterdir():
        if source.name != "README.md":
            (tmp_path / "secrets" / source.name).write_bytes(os.urandom(18).hex().encode()
                                                            + b"\n")
    (tmp_path / "appliance.yaml").write_text(text)
    return tmp_path / "appliance.yaml"


def test_seed_holds_every_needed_secret_byte_exact_and_fits_the_config(tmp_path: Path) -> None:
    path = own_config(tmp_path)
    config = load_config(path)
    seed = decode(make_seed(config, "appliance"), "test")
    refs = needed_refs(config, "appliance")
    assert len(refs) == 7
    assert set(seed.secrets) == {ref_key(r) for r in refs}
    for ref in refs:
        assert ref.file is not None
        assert seed.secrets[ref_key(ref)] == (tmp_path / ref.file).read_bytes()
    assert config.config_sha256 is not None
    check_fits(seed, appliance="arkbox-test", role="appliance",
               config_sha256=config.config_sha256, needed=refs, source="test")


def test_backup_server_seed_carries_none_of_the_appliances_secrets(tmp_path: Path) -> None:
    out = tmp_path / "server.seed"
    result = arkbox("seed", str(DEFAULT_CONFIG_PATH), "--role", "backup-server",
                    "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    assert decode(data, str(out)).secrets == {}
    assert decode(data, str(out)).role == "backup-server"
    assert not any(value.encode() in data for value in PUBLISHED)


def test_env_secrets_are_read_from_the_environment(tmp_path: Path) -> None:
    example = ROOT / "config/examples/minimal.yaml"
    out = tmp_path / "wiki.seed"
    result = arkbox("seed", str(example), "--out", str(out),
                    env={"ARKBOX_BORG_PASSPHRASE": "correct horse battery"})
    assert result.returncode == 0, result.stderr
    seed = decode(out.read_bytes(), str(out))
    assert seed.secrets == {"env:ARKBOX_BORG_PASSPHRASE": b"correct horse battery"}
    assert "correct horse" not in result.stdout + result.stderr


def test_unset_env_secret_is_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARKBOX_BORG_PASSPHRASE"}
    out = tmp_path / "wiki.seed"
    result = subprocess.run([ARKBOX, "seed", str(ROOT / "config/examples/minimal.yaml"),
                             "--out", str(out)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 2
    assert "ARKBOX_BORG_PASSPHRASE is not set" in result.stderr and "hint:" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_published_secrets_refused_for_a_real_domain(tmp_path: Path) -> None:
    path = tmp_path / "appliance.yaml"
    path.write_text(DEFAULT_CONFIG_PATH.read_text().replace("domain: arkbox.test",
                                                            "domain: example.org"))
    (tmp_path / "secrets").symlink_to(SECRETS)
    out = tmp_path / "box.seed"
    refused = arkbox("seed", str(path), "--out", str(out))
    assert refused.returncode == 2
    said = " ".join((refused.stdout + refused.stderr).split())  # rich wraps long lines
    assert "backup.passphrase" in said and str(path) in said
    assert "openssl rand" in said and "--allow-published-secrets" in said
    assert "Traceback" not in said and not out.exists()
    allowed = arkbox("seed", str(path), "--out", str(out), "--allow-published-secrets")
    assert allowed.returncode == 0, allowed.stderr
    assert "PUBLISHED" in allowed.stderr and (out.stat().st_mode & 0o777) == 0o600
    for result in (refused, allowed):
        assert not any(v in result.stdout + result.stderr for v in PUBLISHED)


def test_own_secrets_for_a_real_domain_are_fine(tmp_path: Path) -> None:
    config = load_config(own_config(tmp_path))
    assert decode(make_seed(config, "appliance"), "t").appliance == "arkbox-test"


def test_secret_outside_the_config_dir_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere"
    secret.write_text("x" * 40)
    config_dir = tmp_path / "c"
    config_dir.mkdir()
    text = (ROOT / "config/examples/minimal.yaml").read_text().replace(
        "{env: ARKBOX_BORG_PASSPHRASE}", f"{{file: {secret}}}")
    (config_dir / "appliance.yaml").write_text(text)
    with pytest.raises(BadInputError, match="outside the config's directory"):
        make_seed(load_config(config_dir / "appliance.yaml"), "appliance")


def test_unknown_role_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="unknown role"):
        make_seed(load_config(DEFAULT_CONFIG_PATH), "mail-relay")


def test_seed_file_is_0600_whatever_the_umask_and_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "box.seed"
    out.write_bytes(b"old")
    out.chmod(0o644)
    old = os.umask(0)
    try:
        write_seed_file(b"new seed", out)
    finally:
        os.umask(old)
    assert out.read_bytes() == b"new seed"
    assert (out.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["box.seed"]
