"""The mail container's rendered configuration (pure): Postfix, Dovecot, OpenDKIM, hashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from firstboot.core.config import load_config
from firstboot.core.config.mail import Mail
from firstboot.core.config.scalars import PasswordHash
from firstboot.core.errors import BadInputError
from firstboot.mail import dkim
from firstboot.mail.container import config_digest, parse_users
from firstboot.mail.passwords import hash_password, verifies
from firstboot.mail.render import (
    DKIM_KEY,
    UserEntry,
    render_mail_files,
    sender_logins,
    users_file,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = dkim.make_private_key()


@pytest.fixture(scope="module")
def mail() -> Mail:
    return load_config(ROOT / "config/default.yaml").mail


def render(mail: Mail, **changes: object) -> dict[str, str]:
    files = render_mail_files(mail.model_copy(update=changes),
                              [UserEntry("admin@arkbox.test", "{ARGON2ID}x", "2G")], KEY,
                              relay_password="relay-pw" if changes.get("relay") else None)
    return {path: item.content for path, item in files.items()}


def settings(text: str) -> dict[str, str]:
    """main.cf as name -> value (continuation lines joined)."""
    joined = text.replace("\n    ", " ")
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in
            joined.splitlines() if line and not line.startswith("#") and "=" in line)}


def test_postfix_is_never_an_open_relay_and_names_itself(mail: Mail) -> None:
    main = settings(render(mail)["postfix/main.cf"])
    assert main["mynetworks"] == "127.0.0.0/8 [::1]/128"
    assert main["smtpd_relay_restrictions"] == \
        "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
    assert main["myhostname"] == "mail.arkbox.test"
    assert main["smtpd_banner"] == "$myhostname ESMTP"
    assert main["smtpd_sasl_auth_enable"] == "no"  # AUTH only on the submission ports
    assert main["smtpd_tls_auth_only"] == "yes"
    assert main["message_size_limit"] == str(25 * 1024**2)
    assert main["smtpd_recipient_limit"] == "100"
    assert main["smtpd_client_auth_rate_limit"] == "10"
    assert main["smtpd_tls_protocols"] == ">=TLSv1.2"
    assert "relayhost" not in main


def test_submission_ports_require_tls_and_login(mail: Mail) -> None:
    master = render(mail)["postfix/master.cf"]
    for service, wrapper in (("submission", False), ("submissions", True)):
        block = master.split(f"\n{service} inet")[1].split("\npickup")[0].split("\nsubmissions")[0]
        assert "smtpd_tls_security_level=encrypt" in block
        assert "smtpd_sasl_auth_enable=yes" in block
        assert "smtpd_client_restrictions=permit_sasl_authenticated,reject" in block
        assert "smtpd_sender_restrictions=reject_sender_login_mismatch" in block
        assert "milter_macro_daemon_name=ORIGINATING" in block
        assert ("smtpd_tls_wrappermode=yes" in block) == wrapper


def test_maps_list_domains_mailboxes_aliases_and_who_may_send_as_whom(mail: Mail) -> None:
    files = render(mail)
    assert files["postfix/domains"] == "arkbox.test OK\n"
    assert files["postfix/mailboxes"] == "admin@arkbox.test OK\n"
    assert "postmaster@arkbox.test admin@arkbox.test\n" in files["postfix/aliases"]
    assert "postmaster@arkbox.test admin@arkbox.test\n" in files["postfix/senders"]
    assert sender_logins(mail)["admin@arkbox.test"] == ["admin@arkbox.test"]


def test_dovecot_users_carry_hashes_and_quotas(mail: Mail) -> None:
    files = render_mail_files(mail, [UserEntry("Admin@arkbox.test", "{ARGON2ID}h", "2G"),
                                     UserEntry("b@arkbox.test", "{ARGON2ID}g", None)], KEY)
    users = files["dovecot/users"]
    assert users.content == ("admin@arkbox.test:{ARGON2ID}h::::::"
                             "userdb_quota_storage_size=2G\nb@arkbox.test:{ARGON2ID}g\n")
    assert users.mode == 0o640 and users.owner == (0, 232)
    assert parse_users(users.content.encode()) == {"admin@arkbox.test": "{ARGON2ID}h",
                                                   "b@arkbox.test": "{ARGON2ID}g"}
    conf = files["dovecot/dovecot.conf"].content
    assert "auth_allow_cleartext = no" in conf and "ssl = required" in conf
    assert "ssl_min_protocol = TLSv1.2" in conf and "port = 993" in conf


def test_dkim_signs_every_domain_with_the_key_only_opendkim_reads(mail: Mail) -> None:
    files = render_mail_files(mail.model_copy(update={"domains": ["arkbox.test", "b.test"]}),
                              [], KEY)
    assert files["opendkim/SigningTable"].content == (
        "*@arkbox.test arkbox._domainkey.arkbox.test\n*@b.test arkbox._domainkey.b.test\n")
    assert "arkbox._domainkey.b.test b.test:arkbox:/etc/arkbox-mail/opendkim/keys/dkim.private" \
        in files["opendkim/KeyTable"].content
    key = files[DKIM_KEY]
    assert key.content.encode() == KEY and key.mode == 0o400 and key.owner == (234, 234)
    assert "MTA                     ORIGINATING" in files["opendkim/opendkim.conf"].content


def test_relay_sends_through_the_smarthost_with_tls_and_auth(mail: Mail) -> None:
    relay = {"host": "smtp.relay.example", "port": 465, "username": "u",
             "password": {"file": "secrets/relay"}}
    files = render_mail_files(
        mail.model_copy(update={"relay": Mail.model_validate(
            {"hostname": "m.x.test", "domains": ["x.test"], "relay": relay}).relay}),
        [], KEY, relay_password="pw")
    main = settings(files["postfix/main.cf"].content)
    assert main["relayhost"] == "[smtp.relay.example]:465"
    assert main["smtp_tls_security_level"] == "encrypt"
    assert main["smtp_tls_wrappermode"] == "yes"
    assert main["smtp_sasl_auth_enable"] == "yes"
    secret = files["postfix/relay_password"]
    assert secret.content == "[smtp.relay.example]:465 u:pw\n" and secret.mode == 0o600


def test_a_relay_password_of_more_than_one_line_is_refused_unshown(mail: Mail) -> None:
    # The secret file is the operator's, yet a second line would be a second entry of
    # Postfix's password map; the error never shows the secret.
    relay = Mail.model_validate({"hostname": "m.x.test", "domains": ["x.test"], "relay": {
        "host": "smtp.relay.example", "username": "u", "password": {"env": "PW"}}}).relay
    with pytest.raises(BadInputError, match=r"mail\.relay\.password") as caught:
        render_mail_files(mail.model_copy(update={"relay": relay}), [], KEY,
                          relay_password="s3cret\n[smtp.evil.example]:587 u:x")
    assert "s3cret" not in str(caught.value) and "s3cret" not in (caught.value.hint or "")


def test_the_digest_follows_the_content(mail: Mail) -> None:
    one = render_mail_files(mail, [], KEY)
    two = render_mail_files(mail.model_copy(update={"max_message_size": "10M"}), [], KEY)
    assert config_digest(one) == config_digest(render_mail_files(mail, [], KEY))
    assert config_digest(one) != config_digest(two)
    # Box-made content (the DKIM key, password hashes) is not part of it: two boxes with
    # one config run equal specs; a change of those restarts the container instead.
    other = render_mail_files(mail, [UserEntry("admin@arkbox.test", "{ARGON2ID}y", None)],
                              dkim.make_private_key())
    assert config_digest(other) == config_digest(
        render_mail_files(mail, [UserEntry("admin@arkbox.test", "{ARGON2ID}z", None)], KEY))


def test_password_hashes_are_argon2id_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$")
    assert verifies("correct horse", hashed)
    assert not verifies("wrong", hashed)
    assert not verifies("correct horse", "{SHA512-CRYPT}$6$x")


@pytest.mark.parametrize("hashed", [
    hash_password("x"),  # what arkbox writes
    "{SHA512-CRYPT}$6$rounds=5000$sAlT./x$0123456789abcdefABCDEF./",
    "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui",
    "{SCRAM-SHA-256}4096,c2FsdA==,c3RvcmVk+/==,c2VydmVy",
    "{SSHA512.B64}aGFzaA+/c2FsdA==",
])
def test_the_hash_pattern_takes_real_hashes_and_each_stays_one_field(hashed: str) -> None:
    TypeAdapter(PasswordHash).validate_python(hashed)
    text = users_file([UserEntry("a@arkbox.test", hashed, "2G")])
    assert text.count("\n") == 1 and text.split(":")[:2] == ["a@arkbox.test", hashed]


@pytest.mark.parametrize("hashed", ["{SHA512-CRYPT}$6$x:0:0::/root", "{PLAIN}a b",
                                    "{SHA512-CRYPT}$6$x\nroot:{PLAIN}x", "$6$no-scheme"])
def test_hashes_that_would_add_fields_or_lines_are_refused(hashed: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(PasswordHash).validate_python(hashed)


def test_hashes_are_kept_while_the_password_is_unchanged(tmp_path: Path) -> None:
    from firstboot.core.context import FirstbootContext, Paths
    from firstboot.mail.container import MailPaths, user_entries

    config = load_config(ROOT / "config/default.yaml")
    ctx = FirstbootContext(config, Paths(tmp_path))
    stored = ctx.paths.secrets / "config/secrets/admin-mail-password"
    stored.parent.mkdir(parents=True)
    stored.write_text("first\n")
    paths = MailPaths.of(ctx.paths)
    (first,) = user_entries(ctx, paths)
    assert verifies("first", first.password_hash) and first.quota == "2G"
    users = paths.rendered / "dovecot" / "users"
    users.parent.mkdir(parents=True)
    users.write_text(f"admin@arkbox.test:{first.password_hash}\n")
    assert user_entries(ctx, paths)[0].password_hash == first.password_hash
    stored.write_text("second\n")
    (changed,) = user_entries(ctx, paths)
    assert changed.password_hash != first.password_hash and verifies("second",
                                                                     changed.password_hash)


def test_the_proxy_serves_the_mta_sts_policy_per_mail_domain(mail: Mail) -> None:
    from firstboot.containers.nginx import MailSites, render_proxy_config
    from firstboot.mail.mta_sts import mta_sts_sites

    config = load_config(ROOT / "config/default.yaml")
    (site,) = mta_sts_sites(config, None)
    assert site.hostname == "mta-sts.arkbox.test" and "mode: testing" in site.policy
    text = render_proxy_config([], ocsp_stapling=False, mail=MailSites(mta_sts=(site,)))
    assert "server_name mta-sts.arkbox.test;" in text
    assert ('return 200 "version: STSv1\\nmode: testing\\nmx: mail.arkbox.test\\n'
            'max_age: 604800\\n";') in text


def test_the_mail_report_says_what_changed(mail: Mail) -> None:
    from firstboot.mail.container import MailReport

    ports = "ports 25 465 587 993"
    quiet = MailReport(True)
    assert not quiet.changed and quiet.summary(mail).endswith(f"{ports}; unchanged")
    reloaded = MailReport(True, "reloaded (new certificate)", ["postfix/main.cf"])
    assert reloaded.summary(mail).endswith(
        f"{ports}; container reloaded (new certificate), 1 file(s) written")
    assert reloaded.details(mail)["container"] == "reloaded (new certificate)"
    assert MailReport(True, networks_changed=True).summary(mail).endswith("network created")
    off = MailReport(False, "removed")
    assert off.summary(mail) == "mail is off; container removed (volumes kept)"
    assert off.details(mail) == {} and MailReport(False).summary(mail) == "mail is off"
