"""Placement is a pure function: offers and needs in, decisions out."""

from __future__ import annotations

from sarra.scheduler.placement import Need, OfferView, Resources, place


def offer(oid: str, agent: str, cpus: float = 4, mem: float = 1024, **kw: object) -> OfferView:
    return OfferView(oid, agent, f"{agent}.test", Resources(cpus, mem, 100), **kw)  # type: ignore[arg-type]


def need(slot: str, cpus: float = 1, mem: float = 128, **kw: object) -> Need:
    return Need(slot, slot.rsplit("-", 1)[0], Resources(cpus, mem, 0), **kw)  # type: ignore[arg-type]


def test_workers_spread_over_agents_of_equal_capacity() -> None:
    d = place([need("feed-0"), need("feed-1")], {}, [offer("o1", "a"), offer("o2", "b")], 0, {})
    assert sorted(launch.agent_id for launch in d.launches) == ["a", "b"]
    assert d.decline == () and d.unplaced == ()


def test_offers_of_one_agent_are_combined_to_fit_a_worker() -> None:
    d = place(
        [need("feed-0", cpus=3)], {}, [offer("o1", "a", cpus=2), offer("o2", "a", cpus=2)], 0, {}
    )
    assert d.launches[0].offer_ids == ("o1", "o2")


def test_a_relaunch_goes_back_to_its_previous_agent_when_it_fits() -> None:
    offers = [offer("o1", "a", cpus=8), offer("o2", "b")]
    d = place([need("feed-0", prefer_agent="b")], {}, offers, 0, {})
    assert d.launches[0].agent_id == "b" and d.decline == ("o1",)


def test_an_avoided_agent_gets_nothing_until_the_avoidance_expires() -> None:
    offers = [offer("o1", "a")]
    assert place([need("feed-0")], {}, offers, 10.0, {"a": 20.0}).unplaced == ("feed-0",)
    assert place([need("feed-0")], {}, offers, 30.0, {"a": 20.0}).launches


def test_constraints_on_hostname_attributes_and_role_are_honoured() -> None:
    offers = [
        offer("o1", "a", attributes=(("rack", "r1"),)),
        offer("o2", "b", attributes=(("rack", "r2"),)),
        offer("o3", "c", role="pump"),
    ]
    d = place([need("x-0", attributes=(("rack", "r2"),))], {}, offers, 0, {})
    assert d.launches[0].agent_id == "b"
    d = place([need("x-0", hostnames=("a.test",))], {}, offers, 0, {})
    assert d.launches[0].agent_id == "a"
    d = place([need("x-0", role="pump")], {}, offers, 0, {})
    assert d.launches[0].agent_id == "c"


def test_running_workers_count_when_spreading_and_too_little_room_is_reported() -> None:
    offers = [offer("o1", "a"), offer("o2", "b")]
    d = place([need("feed-2")], {"a": {"feed": 2}, "b": {"feed": 1}}, offers, 0, {})
    assert d.launches[0].agent_id == "b"
    d = place([need("big-0", cpus=16)], {}, offers, 0, {})
    assert d.unplaced == ("big-0",) and d.reasons["big-0"] == "resources"
    assert sorted(d.decline) == ["o1", "o2"]


def test_placement_is_deterministic_and_never_overcommits_an_agent() -> None:
    needs = [need(f"feed-{i}", cpus=1) for i in range(6)]
    offers = [offer("o1", "a", cpus=2), offer("o2", "b", cpus=3)]
    d1 = place(needs, {}, offers, 0, {})
    assert d1 == place(needs, {}, offers, 0, {})
    placed = {launch.agent_id: len(launch.slots) for launch in d1.launches}
    assert placed == {"a": 2, "b": 3} and len(d1.unplaced) == 1
