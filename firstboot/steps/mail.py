"""Step `mail`: the mail server container (Postfix + Dovecot + OpenDKIM), from the config.

What it writes and runs, and how a re-run changes it: firstboot/mail/container.py.
"""

from __future__ import annotations

from firstboot.core.config import Appliance
from firstboot.core.context import FirstbootContext
from firstboot.core.step import Outcome
from firstboot.mail.container import converge_mail, mail_problem

NAME = "mail"


def applies(config: Appliance) -> bool:
    # Also when mail is off: a mail container left from before is removed.
    return True


def run(ctx: FirstbootContext) -> Outcome:
    report = converge_mail(ctx)
    outcome = Outcome.changed_ if report.changed else Outcome.unchanged
    return outcome(report.summary(ctx.config.mail), report.details(ctx.config.mail))


def verify(ctx: FirstbootContext) -> str | None:
    return mail_problem(ctx)
