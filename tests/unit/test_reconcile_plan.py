"""Reconcile planning: desired spec hashes vs the containers arkbox owns."""

from __future__ import annotations

from firstboot.containers.plan import ActualContainer, Plan, plan_containers


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
