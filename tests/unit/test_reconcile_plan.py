"""Reconcile planning: desired specs vs the containers and networks arkbox owns; apply's order."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from firstboot.containers import engine
from firstboot.containers.naming import ROLE_PROXY, ROLE_SERVICE, Naming
from firstboot.containers.plan import (
    Actual,
    ActualContainer,
    ActualNetwork,
    Desired,
    DesiredContainer,
    DesiredNetwork,
    Plan,
    plan,
    plan_containers,
)
from firstboot.containers.reconcile import apply, files_changed_at
from firstboot.containers.spec import Attachment, ServiceSpec
from firstboot.core.step import StepFailed


def container(service: str, config_hash: str, running: bool = True,
              name: str | None = None) -> ActualContainer:
    name = name or f"arkbox-{service}"
    return ActualContainer(service, f"id-{name}-{config_hash}", name, config_hash, running)


def test_fresh_box_creates_everything() -> None:
    plan = plan_containers({"wiki": "h1", "db": "h2"}, [])
    assert plan == Plan(create=("db", "wiki"))
    assert plan.change_count == 2


def test_converged_box_changes_nothing() -> None:
    plan = plan_containers({"wiki": "h1", "db": "h2"}, [container("wiki", "h1"),
                                                        container("db", "h2")])
    assert plan == Plan(keep=("db", "wiki"))
    assert plan.is_empty and plan.change_count == 0


def test_changed_spec_is_recreated_and_its_old_container_removed() -> None:
    old = container("wiki", "old")
    plan = plan_containers({"wiki": "new"}, [old])
    assert plan.recreate == ("wiki",) and plan.remove == (old,)
    assert plan.removed_services == ()  # the service stays: it is recreated
    assert plan.change_count == 1


def test_service_gone_from_config_is_removed() -> None:
    gone = container("calendar", "h9")
    plan = plan_containers({"wiki": "h1"}, [container("wiki", "h1"), gone])
    assert plan.remove == (gone,) and plan.keep == ("wiki",)
    assert plan.removed_services == ("calendar",)
    assert plan.change_count == 1


def test_stopped_but_current_container_is_started_not_recreated() -> None:
    plan = plan_containers({"db": "h2"}, [container("db", "h2", running=False)])
    assert plan == Plan(start=("db",))


def test_power_cut_mid_recreate_keeps_the_current_one_and_drops_the_stale() -> None:
    # A cut after the new container was created but before the old one was removed
    # cannot happen (remove comes first), but a duplicate from any cause is cleaned up.
    stale = container("wiki", "old", name="arkbox-wiki-old")
    current = container("wiki", "new")
    plan = plan_containers({"wiki": "new"}, [stale, current])
    assert plan.keep == ("wiki",) and plan.remove == (stale,)
    assert plan.removed_services == ()


def test_two_current_duplicates_keep_the_running_one() -> None:
    stopped = container("wiki", "h1", running=False, name="arkbox-wiki-a")
    running = container("wiki", "h1", running=True, name="arkbox-wiki-b")
    plan = plan_containers({"wiki": "h1"}, [stopped, running])
    assert plan.keep == ("wiki",) and plan.remove == (stopped,)


def test_add_change_remove_at_once() -> None:
    plan = plan_containers(
        {"wiki": "w2", "db": "d1", "files": "f1"},
        [container("wiki", "w1"), container("db", "d1"), container("calendar", "c1")],
    )
    assert plan.create == ("files",)
    assert plan.recreate == ("wiki",)
    assert plan.keep == ("db",)
    assert plan.removed_services == ("calendar",)
    assert [c.service for c in plan.remove] == ["calendar", "wiki"]
    assert plan.change_count == 3


# ---------------------------------------------------------------- the whole plan


def spec(service: str, *networks: str, depends_on: tuple[str, ...] = ()) -> ServiceSpec:
    """A container spec on its own network (and `networks`)."""
    own = (f"arkbox-{service}", *networks)
    return ServiceSpec(
        service=service, container=f"arkbox-{service}", recipe=None, image_ref="img",
        image_id="sha256:1", command=None, environment=(), secret_environment=(), volumes=(),
        secret_files=(), tmpfs=(), read_only=True, cap_add=(), memory_bytes=None,
        pids_limit=64, nano_cpus=None, healthcheck=None,
        attachments=tuple(Attachment(n, True, (service,)) for n in own),
        stop_grace_seconds=10, depends_on=depends_on, route=None)


def network(name: str, role: str = ROLE_SERVICE, internal: bool = True,
            ipv6: bool = False) -> ActualNetwork:
    return ActualNetwork(name, role, internal, ipv6)


def running(service: str, config_hash: str, *networks: str,
            started_at: float = 1000.0) -> ActualContainer:
    return ActualContainer(service, f"id-{service}", f"arkbox-{service}", config_hash, True,
                           started_at, frozenset((f"arkbox-{service}", *networks)))


def wanted(service: str, config_hash: str, *networks: str, **fields: Any) -> DesiredContainer:
    return DesiredContainer(spec(service, *networks), config_hash, **fields)


def services(*containers: DesiredContainer, prune: bool = True) -> Desired:
    return Desired(ROLE_SERVICE, {c.service: c for c in containers},
                   tuple(DesiredNetwork(c.spec.network, ROLE_SERVICE, True, c.service)
                         for c in containers), prune_networks=prune)


def test_a_converged_box_plans_nothing_and_says_so() -> None:
    actual = Actual((running("wiki", "h1"),), (network("arkbox-wiki"),))
    planned = plan(services(wanted("wiki", "h1")), actual)
    assert planned.is_empty and planned.describe() == []
    assert planned.keep == ("wiki",) and planned.current == {"wiki": "id-wiki"}


def test_a_fresh_box_plans_networks_and_containers() -> None:
    planned = plan(services(wanted("wiki", "h1"), wanted("db", "h2")), Actual((), ()))
    assert planned.create == ("db", "wiki")
    assert [n.name for n in planned.create_networks] == ["arkbox-db", "arkbox-wiki"]
    assert planned.describe() == ["create network arkbox-db", "create network arkbox-wiki",
                                  "create db", "create wiki"]


def test_recreate_carries_the_reason_the_describer_gave() -> None:
    actual = Actual((running("wiki", "old"),), (network("arkbox-wiki"),))
    planned = plan(services(wanted("wiki", "new", recreate_reason="image changed")), actual)
    assert planned.recreate == ("wiki",) and planned.reason("wiki") == "image changed"
    assert "recreate wiki (image changed)" in planned.describe()
    assert "remove arkbox-wiki (wiki: replaced)" in planned.describe()


def test_a_file_changed_after_the_start_restarts_the_container() -> None:
    actual = Actual((running("db", "h", started_at=1000.0),), (network("arkbox-db"),))
    assert plan(services(wanted("db", "h", files_changed_at=999.0)), actual).is_empty
    later = plan(services(wanted("db", "h", files_changed_at=1001.0)), actual)
    assert later.restart == ("db",) and later.keep == ("db",) and later.fresh("db")
    # A file that is out of date (about to be rewritten) restarts it too.
    assert plan(services(wanted("db", "h", files_changed_at=math.inf)), actual).restart == (
        "db",)


def test_a_container_never_started_is_not_restarted_but_started() -> None:
    stopped = dataclasses.replace(running("db", "h"), running=False, started_at=None)
    planned = plan(services(wanted("db", "h", files_changed_at=5.0)),
                   Actual((stopped,), (network("arkbox-db"),)))
    assert planned.start == ("db",) and planned.restart == ()


def test_networks_of_gone_services_are_pruned_and_wrong_ones_replaced() -> None:
    existing = (network("arkbox-wiki", internal=False), network("arkbox-calendar"),
                network("arkbox-proxy", ROLE_PROXY, internal=False, ipv6=True))
    planned = plan(services(wanted("wiki", "h1")), Actual((), existing))
    assert [n.name for n in planned.replace_networks] == ["arkbox-wiki"]  # internal now
    assert planned.remove_networks == ("arkbox-calendar",)  # the proxy's is not ours
    assert planned.network_lines() == ["removed network arkbox-calendar",
                                       "replaced network arkbox-wiki"]


def test_another_roles_network_is_made_when_missing_but_never_reshaped() -> None:
    webmail = DesiredNetwork("arkbox-webmail", ROLE_SERVICE, True, "webmail")
    mail = Desired("mail", {}, (DesiredNetwork("arkbox-mail", "mail", False,
                                               ipv6_subnet="fd00::/64"), webmail))
    assert [n.name for n in plan(mail, Actual((), ())).create_networks] == [
        "arkbox-mail", "arkbox-webmail"]
    shaped_otherwise = Actual((), (network("arkbox-webmail", internal=False),
                                   network("arkbox-mail", "mail", internal=False, ipv6=False)))
    planned = plan(mail, shaped_otherwise)
    assert planned.create_networks == ()
    assert [n.name for n in planned.replace_networks] == ["arkbox-mail"]  # lacks IPv6


def test_live_networks_are_joined_and_left_while_running() -> None:
    proxy = DesiredContainer(spec("proxy"), "p", live_networks=frozenset({"arkbox-wiki",
                                                                          "arkbox-notes"}))
    desired = Desired(ROLE_PROXY, {"proxy": proxy},
                      (DesiredNetwork("arkbox-proxy", ROLE_PROXY, False),))
    actual = Actual((running("proxy", "p", "arkbox-wiki", "arkbox-calendar"),),
                    (network("arkbox-proxy", ROLE_PROXY, internal=False), network("arkbox-wiki"),
                     network("arkbox-notes"), network("arkbox-calendar")))
    planned = plan(desired, actual)
    assert planned.join == (("proxy", "arkbox-notes"),)
    assert planned.leave == (("proxy", "arkbox-calendar"),)
    assert planned.describe() == ["proxy: join arkbox-notes", "proxy: leave arkbox-calendar"]
    # A new proxy is made on its own network and joins the routed ones before its start.
    fresh = plan(desired, Actual((), actual.networks))
    assert fresh.create == ("proxy",)
    assert fresh.join == (("proxy", "arkbox-notes"), ("proxy", "arkbox-wiki"))


def test_a_network_to_join_that_does_not_exist_is_reported_not_planned() -> None:
    proxy = DesiredContainer(spec("proxy"), "p", live_networks=frozenset({"arkbox-notes"}))
    desired = Desired(ROLE_PROXY, {"proxy": proxy},
                      (DesiredNetwork("arkbox-proxy", ROLE_PROXY, False),))
    planned = plan(desired, Actual((running("proxy", "p"),),
                                   (network("arkbox-proxy", ROLE_PROXY, internal=False),)))
    assert planned.missing == (("proxy", "arkbox-notes"),) and planned.join == ()
    assert not planned.is_empty
    assert planned.describe() == ["proxy should join arkbox-notes, which does not exist"]


def test_a_kept_container_rejoins_a_network_replaced_under_it() -> None:
    mail = DesiredContainer(spec("mail", "arkbox-webmail"), "m")
    desired = Desired("mail", {"mail": mail},
                      (DesiredNetwork("arkbox-mail", "mail", False),
                       DesiredNetwork("arkbox-webmail", ROLE_SERVICE, True, "webmail")))
    # The services step replaced arkbox-webmail: the engine disconnected the mail container.
    actual = Actual((running("mail", "m"),),
                    (network("arkbox-mail", "mail", internal=False), network("arkbox-webmail")))
    planned = plan(desired, actual)
    assert planned.keep == ("mail",) and planned.join == (("mail", "arkbox-webmail"),)
    # ... and one whose own network is being replaced now joins the new one.
    stale = Actual(actual.containers, (network("arkbox-mail", "mail", internal=True),
                                       network("arkbox-webmail")))
    again = plan(desired, stale)
    assert [n.name for n in again.replace_networks] == ["arkbox-mail"]
    assert ("mail", "arkbox-mail") in again.join


def test_a_restricted_plan_acts_on_the_first_wave_only() -> None:
    actual = Actual((running("calendar", "c"), running("wiki", "old")), ())
    planned = plan(services(wanted("db", "d"), wanted("wiki", "new")), actual)
    wave = planned.restricted({"db"})
    assert wave.create == ("db",) and wave.recreate == () and wave.remove == ()
    assert [n.name for n in wave.create_networks] == ["arkbox-db", "arkbox-wiki"]


def test_file_times_say_inf_for_an_out_of_date_file(tmp_path: Path) -> None:
    current = tmp_path / "current"
    current.write_bytes(b"secret\n")
    assert files_changed_at([]) is None
    assert files_changed_at([(current, b"secret\n")]) == current.stat().st_mtime
    assert files_changed_at([(current, b"new\n")]) == math.inf
    assert files_changed_at([(tmp_path / "missing", b"x")]) == math.inf
    assert files_changed_at([(tmp_path / "gone", None)]) is None  # no longer rendered


# ---------------------------------------------------------------- apply, in order


def test_apply_removes_shapes_networks_then_creates_joins_and_starts_in_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def record(name: str) -> Any:
        def call(client: object, *args: Any, **kwargs: Any) -> str:
            # Names of what is acted on: strings, a network's name, a spec's service.
            shown = [a if isinstance(a, str) else a.name if isinstance(a, DesiredNetwork)
                     else a.service for a in args if isinstance(a, str | DesiredNetwork
                                                               | ServiceSpec)]
            calls.append(" ".join([name, *shown]))
            return f"new-{shown[0]}" if name == "create_container" else ""
        return call

    for name in ("remove_container", "remove_network", "create_network", "create_container",
                 "start_container", "connect_container", "disconnect_container",
                 "restart_container"):
        monkeypatch.setattr(engine, name, record(name))
    desired = Desired(ROLE_SERVICE, {
        "wiki": wanted("wiki", "w", "arkbox-db", live_networks=frozenset()),
        "db": wanted("db", "d", files_changed_at=2000.0),
        "notes": DesiredContainer(spec("notes", depends_on=("db",)), "n")},
        (DesiredNetwork("arkbox-notes", ROLE_SERVICE, True, "notes"),
         DesiredNetwork("arkbox-db", ROLE_SERVICE, True, "db"),
         DesiredNetwork("arkbox-wiki", ROLE_SERVICE, True, "wiki")), prune_networks=True)
    actual = Actual((running("wiki", "old", "arkbox-db"), running("db", "d"),
                     running("calendar", "c")),
                    (network("arkbox-db"), network("arkbox-wiki"), network("arkbox-calendar")))
    points: list[str] = []
    report = apply(object(), Naming(), plan(desired, actual), points.append)  # type: ignore[arg-type]
    assert calls == [
        "remove_container id-calendar", "remove_container id-wiki",
        "remove_network arkbox-calendar", "create_network arkbox-notes",
        "restart_container id-db",
        "create_container notes", "start_container new-notes notes",
        "create_container wiki", "start_container new-wiki wiki",
    ]
    assert points == ["containers-removed", "created-notes", "created-wiki"]
    assert report.applied and report.changed


def test_apply_refuses_a_plan_with_a_missing_network() -> None:
    proxy = DesiredContainer(spec("proxy"), "p", live_networks=frozenset({"arkbox-notes"}))
    planned = plan(Desired(ROLE_PROXY, {"proxy": proxy}), Actual((running("proxy", "p"),), ()))
    with pytest.raises(StepFailed, match="proxy should join arkbox-notes, which does not exist"):
        apply(object(), Naming(), planned)  # type: ignore[arg-type]
