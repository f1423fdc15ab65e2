"""`arkbox try`: see the built appliance work on this machine, in one command.

The command's actions, each in its own module of the rig package:

    arkbox try [CONFIG]     up.py: build if stale (freshness.py), boot the rig, follow first
                            boot (journal_follow.py), print what to do now (screens.py)
    arkbox try disaster     disaster.py: back up, destroy, watch a blank box restore itself
    arkbox try down|ssh|status   actions.py

The rig's parts are in parts.py, the test ACME CA in ca.py, the rig's DNS in dns.py, and
what `try` and `disaster` share (names, ports, taking the rig down) in try_rig.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from builder.rig.actions import cmd_down, cmd_ssh, cmd_status
from builder.rig.disaster import cmd_disaster
from builder.rig.up import cmd_up

ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "down": cmd_down, "ssh": cmd_ssh, "status": cmd_status, "disaster": cmd_disaster,
}


def run_try(args: argparse.Namespace) -> int:
    """`arkbox try [CONFIG]`, or one of its actions (down, ssh, status, disaster)."""
    action = ACTIONS.get(args.target or "")
    if action is not None:
        return action(args)
    return cmd_up(args)
