"""Placement is a pure function: offers and needs in, decisions out."""

from __future__ import annotations

from sarra.scheduler.core import _offer_view
from sarra.scheduler.placement import Need, OfferView, Resources, place
from sarra.scheduler.resources import role_error


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
        offer("o1", "a", attributes=(("rack", ("TEXT", "r1")),)),
        offer("o2", "b", attributes=(("rack", ("TEXT", "r2")),)),
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


def _mesos_offer(oid: str, agent: str, resources: list[dict], attributes: list[dict]) -> dict:  # type: ignore[type-arg]
    return {
        "id": {"value": oid}, "agent_id": {"value": agent}, "hostname": f"{agent}.test",
        "allocation_info": {"role": "pump"}, "resources": resources, "attributes": attributes,
    }  # fmt: skip


def _cpus(value: float, **extra: object) -> dict:  # type: ignore[type-arg]
    return {"name": "cpus", "type": "SCALAR", "scalar": {"value": value}, **extra}


def test_numeric_and_range_attributes_match_as_a_real_agent_types_them() -> None:
    mem = {"name": "mem", "type": "SCALAR", "scalar": {"value": 512}}
    scalar = _offer_view(_mesos_offer("o1", "a", [_cpus(2), mem], [
        {"name": "rack", "type": "SCALAR", "scalar": {"value": 1.0}},
    ]))  # fmt: skip
    ranges = _offer_view(_mesos_offer("o2", "b", [_cpus(2), mem], [
        {"name": "rack", "type": "RANGES", "ranges": {"range": [{"begin": 3, "end": 5}]}},
    ]))  # fmt: skip
    text = _offer_view(_mesos_offer("o3", "c", [_cpus(2), mem], [
        {"name": "rack", "type": "TEXT", "text": {"value": "1a"}},
    ]))  # fmt: skip
    views = [scalar, ranges, text]
    for wanted, agent in (("1", "a"), ("1.0", "a"), ("4", "b"), ("[3-5]", "b"), ("1a", "c")):
        d = place(
            [need("x-0", cpus=1, role="pump", attributes=(("rack", wanted),))], {}, views, 0, {}
        )
        assert [launch.agent_id for launch in d.launches] == [agent], wanted
    d = place([need("x-0", cpus=1, role="pump", attributes=(("rack", "2"),))], {}, views, 0, {})
    assert d.unplaced == ("x-0",) and d.reasons["x-0"] == "attribute rack"


def test_reserved_resources_are_free_only_for_their_own_role_in_both_formats() -> None:
    mem = {"name": "mem", "type": "SCALAR", "scalar": {"value": 512}}
    refined = [{"type": "STATIC", "role": "pump"}]
    offer = _mesos_offer("o1", "a", [
        _cpus(1), _cpus(2, reservations=refined), _cpus(8, reservations=[{"role": "other"}]),
        _cpus(4, role="other"), _cpus(1, role="pump", reservation={"principal": "p"}), mem,
    ], [])  # fmt: skip
    view = _offer_view(offer)
    # 1 unreserved + 2 (refined) + 1 (older format) for role pump; "other"'s 12 never count
    assert view.resources.cpus == 4 and view.role == "pump"


def test_a_volume_worker_goes_back_to_its_volume_and_a_new_one_reserves_extra_disk() -> None:
    base = OfferView("o1", "a", "a.test", Resources(4, 1024, 100), role="pump")
    with_volume = OfferView(
        "o2", "b", "b.test", Resources(4, 1024, 0), role="pump", volumes=("v-0",)
    )
    fresh = need("x-0", role="pump", volume_id="v-0", volume_mb=50)
    d = place([fresh], {}, [base], 0, {})
    assert d.launches[0].create_volumes == ("x-0",)
    too_big = need("x-0", role="pump", volume_id="v-0", volume_mb=500)
    assert place([too_big], {}, [base], 0, {}).reasons["x-0"] == "resources"
    back = need("x-0", role="pump", volume_id="v-0", volume_mb=50, volume_agent="b")
    d = place([back], {}, [base, with_volume], 0, {"b": 99.0})  # avoidance does not apply
    assert d.launches[0].agent_id == "b" and d.launches[0].create_volumes == ()
    held = need(
        "x-0", role="pump", volume_id="v-0", volume_mb=50, volume_agent="a", volume_busy=True
    )
    d = place([held], {}, [base, with_volume], 0, {})
    assert d.unplaced == ("x-0",) and "still held" in d.reasons["x-0"]


def test_role_names_are_checked_as_the_master_checks_them() -> None:
    for good in ("*", "pump", "eng/pump", "a.b-c_d"):
        assert role_error(good) is None, good
    for bad in ("", ".", "..", "-x", "a b", "/a", "a/", "a//b", "a/*", "a/./b", "x\x7f"):
        assert role_error(bad), bad


def test_an_unplaced_slot_gets_each_offered_agents_reason() -> None:
    offers = [
        offer("o1", "a", cpus=0.5, attributes=(("rack", ("TEXT", "r1")),)),
        offer("o2", "b", attributes=(("rack", ("TEXT", "r2")),)),
        offer("o3", "c", role="other"),
    ]
    d = place([need("x-0", attributes=(("rack", "r1"),))], {}, offers, 0, {"c": 99.0})
    assert d.unplaced == ("x-0",)
    assert d.by_agent["x-0"] == (
        ("a.test", "resources"), ("b.test", "attribute rack"), ("c.test", "agent avoided"),
    )  # fmt: skip
    assert place([need("x-0")], {}, offers, 0, {}).by_agent == {}  # placed: nothing to say
