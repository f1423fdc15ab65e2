"""Where the mail server keeps its data: the container's service name and its volumes,
read by the `mail` step that makes them and by the backup that carries them."""

from __future__ import annotations

from firstboot.mail.render import VMAIL_UID

MAIL_SERVICE = "mail"
# Volume name -> (path in the container, owner, mode). The queue's top directory is
# root's (Postfix makes its own below it); the mailboxes belong to vmail.
VOLUMES = {
    "queue": ("/var/spool/postfix", (0, 0), 0o755),
    "mailboxes": ("/var/mail", (VMAIL_UID, VMAIL_UID), 0o750),
}
