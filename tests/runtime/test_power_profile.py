"""PCIe energy in the model profile (docs/power.md section 8): every copy a request made (host to card, card to card,
card to host) priced per link it crosses; total = cards + PCIe, per card, per request and per transfer."""
import json

import numpy as np
import pytest

import vnpu
from vnpu.emulator.power import pcie_energy
from vnpu.runtime.graph.ir import Graph

RNG = np.random.default_rng(3)


def mlp(batch=4):
    g = Graph("mlp")
    x = g.add_input("x", (batch, 64))
    c = lambda *s: g.add_const("w", (RNG.standard_normal(s) * 0.2).astype(np.float32))  # noqa: E731
    y = g.add_node("relu", [g.add_node("linear", [x, c(128, 64), c(128)], name="fc1")], name="relu1")
    y = g.add_node("relu", [g.add_node("linear", [y, c(64, 128), c(64)], name="fc2")], name="relu2")
    g.set_outputs([g.add_node("linear", [y, c(10, 64), c(10)], name="fc3")])
    return g


X = RNG.standard_normal((4, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def served():
    prog = vnpu.compile(mlp(), [X], cards=2, strategy="pipeline", check=False)
    prog.serve([[X], [X * 0.5], [X * 2]], inflight=2)
    return prog, prog.profile()


def test_total_is_cards_plus_pcie_and_every_breakdown_adds_up(served):
    _, prof = served
    assert {t["kind"] for t in prof.transfers} >= {"h2d", "p2p", "d2h"}
    assert prof.card_energy_j > 0 and prof.pcie_energy_j > 0
    assert prof.energy_j == pytest.approx(prof.card_energy_j + prof.pcie_energy_j, rel=1e-12)
    assert prof.card_energy_j == pytest.approx(sum(r.energy_j for r in prof.records), rel=1e-12)
    assert prof.pcie_energy_j == pytest.approx(sum(t["energy_j"] for t in prof.pcie()), rel=1e-12)
    cards = prof.per_card()
    assert sum(c["energy_j"] for c in cards.values()) == pytest.approx(prof.energy_j, rel=1e-12)
    assert sum(c["pcie_energy_j"] for c in cards.values()) == pytest.approx(prof.pcie_energy_j, rel=1e-12)
    assert all(c["energy_j"] == pytest.approx(c["launch_energy_j"] + c["pcie_energy_j"]) for c in cards.values())
    reqs = prof.per_request()
    assert [r["request"] for r in reqs] == [0, 1, 2]
    assert sum(r["energy_j"] for r in reqs) == pytest.approx(prof.energy_j, rel=1e-12)
    assert sum(r["pcie_energy_j"] for r in reqs) == pytest.approx(prof.pcie_energy_j, rel=1e-12)
    for t in prof.pcie():
        assert sum(t["energy_by_card"].values()) == pytest.approx(t["energy_j"], rel=1e-12)
    assert prof.requests_per_j == pytest.approx(3 / prof.energy_j)


def test_a_copy_is_priced_on_each_link_it_crosses(served):
    prog, prof = served
    sw = prog.platform.switch
    cfg = prog.platform.devices[0].config
    for t in prof.pcie():
        if not t["bytes"]:
            assert t["energy_j"] == 0
            continue
        issuer = t["from"] if t["kind"] == "p2p" else t["card"]
        route = sw.route(t["kind"], issuer, t["card"] if t["kind"] == "p2p" else None)
        assert len(route) == 2                                   # h2d/d2h: uplink + card link; p2p: two card links
        data, req = sw.cards[issuer].config.wire_bytes(t["bytes"], t["kind"],
                                                       min(link.config.max_payload for link, _ in route))
        assert data + req > t["bytes"]                           # TLP headers and read requests are bits too
        assert t["energy_j"] == pytest.approx(sum(pcie_energy(cfg, data + req, link.config.gen) for link, _ in route))
        if t["kind"] == "p2p":                                   # each card pays its own link
            assert set(t["energy_by_card"]) == {t["from"], t["card"]}
        else:
            assert set(t["energy_by_card"]) == {t["card"]}


def test_a_faster_link_generation_costs_less_per_byte():
    """Gen4 links (5 pJ/bit) against Gen3 (6 pJ/bit): the same bytes, the same cards' energy, less PCIe energy."""
    out = {}
    for gen in (3, 4):
        p = vnpu.Platform({"cards": 2, "link": {"gen": gen, "lanes": 4}, "uplink": {"gen": gen, "lanes": 16}})
        prog = vnpu.compile(mlp(), [X], cards=2, strategy="pipeline", check=False, platform=p)
        prog.run(X)
        out[gen] = prog.profile()
    assert out[4].pcie_energy_j == pytest.approx(out[3].pcie_energy_j * 5 / 6, rel=1e-9)
    assert out[4].card_energy_j == pytest.approx(out[3].card_energy_j, rel=1e-9)


def test_twice_the_requests_never_cost_less(served):
    prog, prof = served
    prog.serve([[X]] * 6, inflight=2)
    six = prog.profile()
    assert six.energy_j >= 1.9 * prof.energy_j and six.pcie_energy_j >= 1.9 * prof.pcie_energy_j


def test_the_report_and_json_show_pcie_power_and_inferences_per_joule(served):
    _, prof = served
    text = str(prof)
    assert "PCIe" in text and "inferences" in text and "per joule" in text
    assert "W average" in text and "W peak" in text and "mJ" in text
    d = json.loads(prof.json())
    for k in ("energy_j", "card_energy_j", "pcie_energy_j", "energy_per_request_j", "requests_per_j", "average_w",
              "peak_w", "per_request"):
        assert k in d, k
    assert d["energy_j"] == pytest.approx(d["card_energy_j"] + d["pcie_energy_j"])
    assert all("energy_j" in t for t in d["transfers"])
    assert 0 < d["average_w"] <= d["peak_w"] <= 12.0 + 1e-9          # the default cap


def test_idle_energy_fills_the_makespan_outside_the_launches(served):
    """What the platform drew = the ops' energy + each card's idle power over the makespan outside its launches."""
    from vnpu.emulator.power import idle_power
    prog, prof = served
    cards = prog.platform.devices[:prog.placement.cards]
    busy = {d.index: sum(r.launch_ns for r in prof.records if r.card == d.index) for d in cards}
    want = sum(idle_power(d.config) * (prof.makespan_ns - busy[d.index]) * 1e-9 for d in cards)
    assert all(prof.makespan_ns >= b for b in busy.values())
    assert prof.idle_energy_j == pytest.approx(want) and prof.idle_energy_j > 0
    assert prof.energy_with_idle_j == pytest.approx(prof.energy_j + prof.idle_energy_j)
    d = prof.to_dict()
    assert d["energy_with_idle_j"] == pytest.approx(prof.energy_with_idle_j)
