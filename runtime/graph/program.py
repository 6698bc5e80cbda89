"""`vnpu.compile`: a model in, a program on the platform's cards out (Glow's shape: the graph is optimized,
partitioned over the cards by a cost model, provisioned, and run by an executor with one device manager per
card).

    prog = vnpu.compile(model, example_inputs, cards=6, dtype="int8", strategy="auto")
    outputs = prog.run(*inputs)          # checked against the framework when it can (prog.last_check)
    print(prog.profile())                # per op: card, kernels, cycles, time, utilization, bytes, bound
    print(prog.coverage())               # every op: lowered to a kernel, run on the host, or unsupported

Strategies (Glow's): `single` (one card), `replicate` (every card holds the whole model; requests spread
round robin), `pipeline` (consecutive ops on different cards, balanced by modeled time; activations cross
through the switch), `sparsenn` (embedding tables sharded over the cards by bytes, the dense part replicated).
`auto` picks sparsenn when the model has embedding tables, pipeline when its weights do not fit one card's
SRAM and DRAM budget, replicate otherwise.

Every op runs through a library kernel on the card that holds it (`Queue.run` books its launches on the
card's virtual timeline); an op the card cannot run is an `UnsupportedOp` error naming it and where it came
from, unless `allow_host=True`, when it runs on the host with its data crossing PCIe and its host time on
the timeline. Never a zero-cost stand-in.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from vnpu.errors import InvalidArgument, UnsupportedOp, VnpuError

from . import passes
from .interp import check_inputs, run_host
from .ir import Graph
from .opset import OPS, NotLowered

DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "int8": "int8"}
STRATEGIES = ("auto", "single", "replicate", "pipeline", "sparsenn")
SRAM_BUDGET = 0.75               # of the shared SRAM, for a card's resident weights
TABLE_OPS = ("embedding_bag", "embedding")


# --- the model in ----------------------------------------------------------------------------------------------
def to_graph(model, example_inputs=None, batch=None):
    """A Graph from what the user has: a Graph, a torch.nn.Module (with example inputs), an ExportedProgram,
    an ONNX ModelProto or file path, or a built-in model's name."""
    if isinstance(model, Graph):
        return model
    mod = type(model).__module__ or ""
    if mod.startswith("torch"):
        from .frontends import torch_frontend as tf
        if type(model).__name__ == "ExportedProgram":
            return tf.from_exported_program(model)
        if example_inputs is None:
            raise InvalidArgument("compile: a torch.nn.Module needs example_inputs (a tuple of tensors)")
        return tf.from_torch(model, tuple(example_inputs))
    if hasattr(model, "forward") and callable(getattr(model, "forward")) and example_inputs is not None:
        from .frontends import torch_frontend as tf
        return tf.from_torch(model, tuple(example_inputs))
    if mod.startswith("onnx") or (isinstance(model, (str, bytes)) or hasattr(model, "__fspath__")) and \
            str(model).endswith(".onnx"):
        from .frontends import onnx_frontend as of
        return of.from_onnx(model, batch=batch)
    if isinstance(model, str):
        from . import models
        return models.build(model, batch=batch or 1)
    raise InvalidArgument(f"compile: cannot take a {type(model).__name__}: give a vnpu Graph, a torch.nn.Module "
                          f"with example_inputs, a torch.export.ExportedProgram, an ONNX model or .onnx path, or a "
                          f"built-in model name")


# --- coverage --------------------------------------------------------------------------------------------------
@dataclass
class OpStatus:
    node: str
    op: str
    status: str          # "card", "host" or "unsupported"
    source: str
    detail: str = ""     # the kernel family, or why not


class Coverage(list):
    """One OpStatus per op of the compiled graph, in order."""

    def counts(self):
        c = {"card": 0, "host": 0, "unsupported": 0}
        for s in self:
            c[s.status] += 1
        return c

    def unsupported(self):
        return [s for s in self if s.status == "unsupported"]

    def __str__(self):
        w = max([len(s.node) for s in self] + [4])
        lines = [f"{'node':{w}s}  {'op':22s} {'status':12s} where / why"]
        for s in self:
            lines.append(f"{s.node:{w}s}  {s.op:22s} {s.status:12s} {s.source}{' -- ' + s.detail if s.detail else ''}")
        c = self.counts()
        lines.append(f"{len(self)} ops: {c['card']} on the card, {c['host']} on the host, {c['unsupported']} unsupported")
        return "\n".join(lines)


def _static_status(node, graph):
    """What can be said before running: no card lowering at all, a foreign op, or the dtypes the lowering
    refuses (checked by calling it on empty stand-ins with a card that is never reached)."""
    d = OPS[node.op]
    if node.op == "foreign":
        return "unsupported", node.attrs.get("needs", f"a vnpu op for {node.attrs.get('op')}")
    if d.card is None:
        return "unsupported", f"no card kernel for {node.op}"
    xs = []
    for i in node.inputs:
        if not i:
            xs.append(None)
            continue
        v = graph.values[i]
        xs.append(v.data if v.is_const else np.zeros(v.shape, v.dtype))
    try:
        d.card(_NoCard(), xs, node.attrs, None)
    except NotLowered as e:
        return "unsupported", str(e)
    except _Reached:
        pass
    except Exception:         # noqa: BLE001  (the lowering refused the stand-in card: it got that far)
        pass
    return "card", node.op


class _Reached(Exception):
    pass


class _NoCard:
    """A stand-in card: any use means the lowering accepted its operands."""
    def __getattr__(self, name):
        raise _Reached(name)


# --- partitioning ---------------------------------------------------------------------------------------------
def op_cost(node, graph, card_config):
    """Modeled seconds of one op on one card (Glow's estimate): the larger of its matrix-unit time (MACs at
    the card's peak for its dtype) and its memory time (operand and result bytes at DRAM bandwidth)."""
    cfg = card_config
    d = OPS[node.op]
    ins = [(graph.values[i].shape, graph.values[i].dtype) if i else None for i in node.inputs]
    outs = [(graph.values[o].shape, graph.values[o].dtype) for o in node.outputs]
    macs = d.macs(ins, outs, node.attrs) if d.macs else 0
    dt = ins[0][1] if ins and ins[0] else "float32"
    rate = {"int8": cfg.matrix.int8_rate, "float16": cfg.matrix.fp16_rate}.get(dt, cfg.matrix.fp32_rate)
    peak = cfg.pes * cfg.matrix.rows * cfg.matrix.cols * cfg.matrix.depth * rate * cfg.clock_ghz * 1e9
    nbytes = sum(graph.values[i].nbytes for i in node.inputs if i) + sum(graph.values[o].nbytes for o in node.outputs)
    return max(macs / peak, nbytes / (cfg.dram.gbps * 1e9))


@dataclass
class Placement:
    strategy: str
    cards: int
    stage: list                     # per node: its card for pipeline / sparsenn tables, None: the request's card
    weight_memory: dict = field(default_factory=dict)   # constant name -> "shared" or "dram"
    card_weight_bytes: list = field(default_factory=list)
    estimate_s: list = field(default_factory=list)      # per card: modeled seconds per request

    def card_of(self, i, request):
        s = self.stage[i]
        return request % self.cards if s is None else s


def partition(graph, cards, strategy, card_config, link_gbps):
    n = len(graph.nodes)
    costs = [op_cost(nd, graph, card_config) for nd in graph.nodes]
    weights = [sum(graph.values[i].nbytes for i in nd.inputs if i and graph.values[i].is_const) for nd in graph.nodes]
    tables = [i for i, nd in enumerate(graph.nodes) if nd.op in TABLE_OPS and graph.values[nd.inputs[0]].is_const
              and graph.values[nd.inputs[0]].nbytes >= 1 << 20]
    budget = card_config.dram.bytes * 0.5 + card_config.shared_sram.bytes * SRAM_BUDGET
    if strategy == "auto":
        strategy = "single" if cards == 1 else "sparsenn" if tables else (
            "pipeline" if sum(weights) > budget else "replicate")
    if strategy == "single" or cards == 1:
        stage = [0] * n
        cards = 1
    elif strategy == "replicate":
        stage = [None] * n
    elif strategy == "sparsenn":
        stage = [None] * n
        load = [0] * cards
        for i in sorted(tables, key=lambda i: -weights[i]):      # largest table first onto the lightest card
            c = min(range(cards), key=lambda c: (load[c], c))
            stage[i] = c
            load[c] += weights[i]
    elif strategy == "pipeline":
        stage = _balanced_stages(costs, graph, cards, link_gbps)
    else:
        raise InvalidArgument(f"compile: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    per_card_w = [0] * cards
    for i, nd in enumerate(graph.nodes):
        for c in ([stage[i]] if stage[i] is not None else range(cards)):
            per_card_w[c] += weights[i]
    est = [0.0] * cards
    for i in range(n):
        for c in ([stage[i]] if stage[i] is not None else range(cards)):
            est[c] += costs[i]
    p = Placement(strategy, cards, stage, card_weight_bytes=per_card_w, estimate_s=est)
    sram = card_config.shared_sram.bytes * SRAM_BUDGET
    for c in range(cards):            # weights resident in SRAM in order of use while they fit, else DRAM
        used = 0
        for i, nd in enumerate(graph.nodes):
            if stage[i] not in (None, c):
                continue
            for x in nd.inputs:
                v = graph.values.get(x) if x else None
                if v is not None and v.is_const and x not in p.weight_memory:
                    fits = used + v.nbytes <= sram
                    p.weight_memory[x] = "shared" if fits else "dram"
                    used += v.nbytes if fits else 0
    return p


def _balanced_stages(costs, graph, cards, link_gbps):
    """Consecutive ops into `cards` stages minimizing the slowest stage (its ops' modeled time plus the bytes
    entering it over the link): binary search on the stage time, greedy fill."""
    n = len(costs)
    cut_cost = []
    produced_before = set(graph.inputs)
    for nd in graph.nodes:
        cut_cost.append(sum(graph.values[i].nbytes for i in nd.inputs if i and not graph.values[i].is_const)
                        / (link_gbps * 1e9))
        produced_before.update(nd.outputs)

    def stages_for(limit):
        st, c, acc = [], 0, 0.0
        for i in range(n):
            add = costs[i] + (cut_cost[i] if acc == 0 and i else 0.0)
            if acc and acc + costs[i] > limit and c + 1 < cards:
                c, acc = c + 1, cut_cost[i]
            acc += costs[i] if acc or not i else add
            st.append(c)
        return st, c + 1
    lo, hi = max(costs + [0.0]), sum(costs) + sum(cut_cost) + 1e-12
    best = stages_for(hi)[0]
    for _ in range(50):
        mid = (lo + hi) / 2
        st, used = stages_for(mid)
        if used <= cards and max(_stage_times(st, costs, cards)) <= mid * 1.0001:
            best, hi = st, mid
        else:
            lo = mid
    return best


def _stage_times(stage, costs, cards):
    t = [0.0] * cards
    for s, c in zip(stage, costs):
        t[s] += c
    return t


# --- the profile ------------------------------------------------------------------------------------------------
@dataclass
class OpRecord:
    request: int
    node: str
    op: str
    card: int
    where: str             # "card" or "host"
    kernels: list
    cycles: int
    start_ns: float
    end_ns: float
    units: dict
    bytes: dict
    bound: str
    source: str
    placement: str = ""
    energy_j: float = 0.0      # the card's energy for the op's launches (emulator/power.py, docs/power.md)
    peak_w: float = 0.0        # the highest average power of its launches, at their booked operating points
    launch_ns: float = 0.0     # its launches' booked time (under the power cap: at the clock they ran at)
    macs: int = 0              # MACs its launches ran on the matrix units (the emulator's count, padding included)


class ProgramProfile:
    """What one `run` (or `serve`) cost, per op, per card and per request, on the platform's virtual timeline.

    Energy (docs/power.md section 8): each op's launches on its card (`records[i].energy_j`) plus every PCIe
    copy the requests made, host to card, card to host and card to card (`pcie()`: the copy's wire bytes priced
    on each link it crosses at that link's generation). `energy_j` = `card_energy_j` + `pcie_energy_j`; per card,
    per request and per transfer they add up to it."""

    def __init__(self, program, records, transfers, requests, wall_s):
        self.program, self.records, self.transfers = program, records, transfers
        self.requests = requests                 # [(request, start_ns, end_ns)]
        self.wall_s = wall_s
        self._pcie = None

    @property
    def makespan_ns(self):
        if not self.requests:
            return 0.0
        return max(e for _, _, e in self.requests) - min(s for _, s, _ in self.requests)

    def latencies_ns(self):
        return [e - s for _, s, e in self.requests]

    def pcie(self):
        """Each transfer with its PCIe energy: a copy of the transfer dict plus `energy_j` and `energy_by_card`
        ({card: joules}: a card's own link to that card, the shared uplink to the card the copy served)."""
        if self._pcie is None:
            self._pcie = [dict(t, **_pcie_energy(self.program.platform, t)) for t in self.transfers]
        return self._pcie

    @property
    def pcie_energy_j(self):
        """Joules of every PCIe copy of the run(s) (emulator/power.py pcie_energy, per link crossed)."""
        return sum(t["energy_j"] for t in self.pcie())

    @property
    def card_energy_j(self):
        """The cards' energy for every op of the run(s): the launches' dynamic, idle and static energy at the
        operating points they were booked at (not the cards' idle time between launches)."""
        return sum(r.energy_j for r in self.records)

    @property
    def energy_j(self):
        """Total: the cards' launches plus the PCIe copies (docs/power.md section 8)."""
        return self.card_energy_j + self.pcie_energy_j

    @property
    def requests_per_j(self):
        """Inferences (requests) per joule of the total energy; None without energy."""
        e = self.energy_j
        return len(self.requests) / e if e else None

    @property
    def average_w(self):
        """A card's average power while it runs a launch: the launches' energy over their booked time, every card
        together (PCIe not included). Not over the makespan: the cards' idle time between launches is not in the
        energy (docs/deviations.md 14)."""
        ns = sum(r.launch_ns for r in self.records)
        return self.card_energy_j / (ns * 1e-9) if ns else 0.0

    @property
    def idle_energy_j(self):
        """The program's cards' idle energy over the makespan, outside their launches: each card's idle power
        (emulator/power.py idle_power: static power and clock spines) x (makespan - its booked launch time).
        Not in `energy_j` (what the ops cost); in `energy_with_idle_j` (what the platform drew)."""
        from vnpu.emulator.power import idle_power
        busy = {}
        for r in self.records:
            busy[r.card] = busy.get(r.card, 0.0) + r.launch_ns
        devices = self.program.devices[:self.program.placement.cards]
        return sum(idle_power(d.config) * max(0.0, self.makespan_ns - busy.get(d.index, 0.0)) * 1e-9
                   for d in devices)

    @property
    def energy_with_idle_j(self):
        """What the program's cards and links drew over the makespan: `energy_j` + `idle_energy_j`."""
        return self.energy_j + self.idle_energy_j

    @property
    def peak_w(self):
        """The highest average power of any launch of the run, on any card (what the power cap bounds)."""
        return max((r.peak_w for r in self.records), default=0.0)

    def per_card(self):
        cards = {}

        def card(c):
            return cards.setdefault(c, {"ops": 0, "cycles": 0, "busy_ns": 0.0, "launch_ns": 0.0, "energy_j": 0.0,
                                        "launch_energy_j": 0.0, "pcie_energy_j": 0.0, "average_w": 0.0,
                                        "peak_w": 0.0})
        for r in self.records:
            c = card(r.card)
            c["ops"] += 1
            c["cycles"] += r.cycles
            c["busy_ns"] += r.end_ns - r.start_ns
            c["launch_ns"] += r.launch_ns
            c["launch_energy_j"] += r.energy_j
            c["peak_w"] = max(c["peak_w"], r.peak_w)
        for t in self.pcie():
            for k, j in t["energy_by_card"].items():
                card(k)["pcie_energy_j"] += j
        for c in cards.values():
            c["energy_j"] = c["launch_energy_j"] + c["pcie_energy_j"]
            c["average_w"] = c["launch_energy_j"] / (c["launch_ns"] * 1e-9) if c["launch_ns"] else 0.0
        return dict(sorted(cards.items()))

    def per_request(self):
        """[{request, latency_ns, energy_j, card_energy_j, pcie_energy_j}]: what each inference cost."""
        out = {r: {"request": r, "latency_ns": e - s, "energy_j": 0.0, "card_energy_j": 0.0, "pcie_energy_j": 0.0}
               for r, s, e in self.requests}
        for rec in self.records:
            if rec.request in out:
                out[rec.request]["card_energy_j"] += rec.energy_j
        for t in self.pcie():
            if t["request"] in out:
                out[t["request"]]["pcie_energy_j"] += t["energy_j"]
        for d in out.values():
            d["energy_j"] = d["card_energy_j"] + d["pcie_energy_j"]
        return [out[r] for r in sorted(out)]

    def to_dict(self):
        lat = sorted(self.latencies_ns())
        n = len(self.requests)
        return {"model": self.program.graph.name, "strategy": self.program.placement.strategy,
                "cards": self.program.placement.cards, "dtype": self.program.dtype,
                "requests": n, "makespan_ns": self.makespan_ns,
                "latency_ns": {"p50": _pct(lat, 50), "p90": _pct(lat, 90), "p99": _pct(lat, 99)},
                "per_card": self.per_card(), "per_request": self.per_request(), "energy_j": self.energy_j,
                "card_energy_j": self.card_energy_j, "pcie_energy_j": self.pcie_energy_j,
                "energy_per_request_j": self.energy_j / n if n else None,
                "requests_per_j": self.requests_per_j, "average_w": self.average_w, "peak_w": self.peak_w,
                "idle_energy_j": self.idle_energy_j, "energy_with_idle_j": self.energy_with_idle_j,
                "ops": [r.__dict__ for r in self.records],
                "transfers": self.pcie(), "wall_s": self.wall_s}

    def json(self):
        return json.dumps(self.to_dict(), indent=1, default=_jsonable)

    def energy_lines(self):
        """The energy summary `str()` ends with and `vnpu serve` prints."""
        n = len(self.requests)
        if not self.energy_j or not n:
            return []
        return [f"energy: {self.energy_j * 1e3:.4f} mJ = cards {self.card_energy_j * 1e3:.4f} + PCIe "
                f"{self.pcie_energy_j * 1e3:.4f} mJ; per inference {self.energy_j * 1e3 / n:.4f} mJ (cards "
                f"{self.card_energy_j * 1e3 / n:.4f} + PCIe {self.pcie_energy_j * 1e3 / n:.4f})",
                f"power: {self.average_w:.2f} W average per card while running, {self.peak_w:.2f} W peak (a "
                f"launch); {self.requests_per_j:.1f} requests per joule (inferences/J; docs/power.md)"]

    def __str__(self):
        lines = [f"{self.program.graph.name}: {len(self.requests)} request(s), strategy {self.program.placement.strategy} "
                 f"on {self.program.placement.cards} card(s), {self.program.dtype}; makespan "
                 f"{self.makespan_ns / 1e3:.1f} us, latency p50 {_pct(sorted(self.latencies_ns()), 50) / 1e3:.1f} us",
                 f"{'op':28s} {'kind':20s} {'card':>4s} {'cycles':>10s} {'us':>9s} {'matrix':>7s} {'vector':>7s} "
                 f"{'DMA':>5s} {'DRAM MB':>8s} {'uJ':>9s} {'W':>6s}  bound"]
        for r in self.records if len(self.requests) == 1 else [x for x in self.records if x.request == 0]:
            u = r.units
            mb = (r.bytes.get("dram_read", 0) + r.bytes.get("dram_write", 0)) / 1e6
            w = r.energy_j / (r.launch_ns * 1e-9) if r.launch_ns else 0.0
            lines.append(f"{r.node[:28]:28s} {r.op[:20]:20s} {r.card:4d} {r.cycles:10d} "
                         f"{(r.end_ns - r.start_ns) / 1e3:9.2f} {u.get('matrix', 0):7.0%} {u.get('vector', 0):7.0%} "
                         f"{u.get('dma', 0):5.0%} {mb:8.2f} {r.energy_j * 1e6:9.2f} {w:6.2f}  "
                         f"{r.bound}{' (host)' if r.where == 'host' else ''}")
        for c, t in self.per_card().items():
            lines.append(f"card {c}: {t['ops']} ops, {t['cycles']:,} cycles, busy {t['busy_ns'] / 1e3:.1f} us, "
                         f"{t['energy_j'] * 1e3:.3f} mJ (launches {t['launch_energy_j'] * 1e3:.3f}, PCIe "
                         f"{t['pcie_energy_j'] * 1e3:.3f}), {t['average_w']:.2f} W average while running, "
                         f"{t['peak_w']:.2f} W peak")
        lines += self.energy_lines()
        if self.transfers:
            tb = sum(t["bytes"] for t in self.transfers)
            lines.append(f"transfers: {len(self.transfers)} ({tb / 1e6:.2f} MB over PCIe / the switch, "
                         f"{self.pcie_energy_j * 1e6:.1f} uJ)")
        return "\n".join(lines)


def _pcie_energy(platform, t):
    """The PCIe energy of one transfer record of the executor (kind h2d, d2h or p2p; card; from, for p2p): its wire
    bytes (payload, TLP headers, read requests, as driver/pcie.py counts them) priced on each link it crosses at
    that link's generation (emulator/power.py pcie_energy, both ends of a link). A card's link is charged to that
    card, the uplink to the card the copy went to or came from."""
    from vnpu.emulator.power import pcie_energy
    sw, n = platform.switch, int(t.get("bytes", 0))
    if n <= 0:
        return {"energy_j": 0.0, "energy_by_card": {}}
    if t["kind"] == "p2p":
        issuer = t["from"]
        route = sw.route("p2p", issuer, t["card"])
    else:
        issuer = t["card"]
        route = sw.route(t["kind"], issuer)
    cfg = sw.cards[issuer].config
    data, req = cfg.wire_bytes(n, t["kind"], min(link.config.max_payload for link, _ in route))
    card_cfg = platform.devices[t["card"]].config
    by_card = {}
    for link, _ in route:
        owner = next((i for i, x in enumerate(sw.cards) if x is link), t["card"])
        by_card[owner] = by_card.get(owner, 0.0) + pcie_energy(card_cfg, data + req, link.config.gen)
    return {"energy_j": sum(by_card.values()), "energy_by_card": by_card}


def _pct(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _bound(summary):
    u = summary.get("units", {})
    busy = {k: u.get(k, {}).get("utilization", 0.0) for k in ("matrix", "vector", "dma", "embedding")}
    k = max(busy, key=busy.get)
    return {"matrix": "compute (matrix)", "vector": "vector", "dma": "memory (DMA)", "embedding": "embedding"}[k] \
        if busy[k] > 0 else "latency"


# --- the program ------------------------------------------------------------------------------------------------
class Program:
    """A compiled model on a platform. `run(*inputs)` runs one request; `serve(requests, inflight)` many."""

    def __init__(self, graph, platform, placement, dtype, allow_host, reference=None, pes=None, check=True,
                 name=None):
        self.graph, self.platform, self.placement, self.dtype = graph, platform, placement, dtype
        self.allow_host, self.reference, self.pes, self.check = allow_host, reference, pes, check
        self.name = name or graph.name
        self._coverage = Coverage(OpStatus(n.name, op_name(n), *_status_tuple(n, graph)) for n in graph.nodes)
        self._profile = None
        self.last_check = None
        self._lock = threading.Lock()
        self._pins = []              # (device, array) this program pinned on the cards (resident constants)
        from vnpu.kernels.runner import mark_constant
        for v in graph.values.values():  # the kernels' host functions lay out constant weights once (runner.derived)
            if v.is_const:
                mark_constant(v.data)
        self.device_map = list(range(placement.cards))   # the platform's device of each of the program's cards
        # int64 inputs read only as embedding indices or offsets: sent to the cards as int32 when a request's
        # values fit (FBGEMM's table-batched embedding takes int32 indices; half the PCIe bytes)
        users = graph.consumers()
        self.index_inputs = {i for i in graph.inputs if graph.values[i].dtype == "int64" and users.get(i) and all(
            n.op == "embedding_bag" and i in n.inputs[1:3] and i != n.inputs[0] for n in users[i])}
        bad = self._coverage.unsupported()
        if bad and not allow_host:
            s = bad[0]
            more = f" (and {len(bad) - 1} more: {', '.join(sorted({b.op for b in bad[1:]}))})" if len(bad) > 1 else ""
            raise UnsupportedOp(f"{s.op} at {s.source or s.node} cannot run on the card: needs {s.detail}{more}; "
                                f"compile with allow_host=True to run such ops on the host", op=s.op,
                                source=s.source, needs=s.detail)
        for s in bad:
            node = next(n for n in graph.nodes if n.name == s.node)
            if node.op == "foreign" and node.attrs.get("fn") is None:
                raise UnsupportedOp(f"{s.op} at {s.source}: neither the card nor the host can run it ({s.detail})",
                                    op=s.op, source=s.source, needs=s.detail)
            s.status = "host"

    def coverage(self):
        return self._coverage

    @property
    def devices(self):
        """The platform's devices the program runs on, its card c on devices[c]."""
        return [self.platform.devices[i] for i in self.device_map]

    def relocate(self):
        """Place the program again over those of its cards still alive: a lost card's tables and its share of
        the requests move to the others (the SparseNN runtime's answer to a card whose link went down). Raises
        DeviceLost when none is left."""
        from vnpu.errors import DeviceLost
        with self._lock:
            alive = [i for i in self.device_map if not self.platform.devices[i].is_lost]
            if not alive:
                raise DeviceLost(f"every card of {self.name!r} is lost")
            for d, a in self._pins:
                if not d.is_lost:
                    d.card.unpin(a)
            self._pins = []
            cfg = self.platform.devices[alive[0]].config
            link = self.platform.switch.cards[alive[0]].config.effective_gbps("p2p")
            self.placement = partition(self.graph, len(alive), self.placement.strategy, cfg, link)
            self.device_map = alive

    def save(self, path):
        """Write the compiled program to a .vnpp file (vnpu.runtime.graph.bundle): `load_program` and the C API's
        vnpuProgramLoad run it without the model's framework."""
        from .bundle import save
        save(self, path)

    def profile(self):
        """The ProgramProfile of the last run or serve (None before the first)."""
        return self._profile

    def __repr__(self):
        return (f"Program({self.name!r}: {len(self.graph.nodes)} ops, {self.dtype}, {self.placement.strategy} on "
                f"{self.placement.cards} card(s))")

    def run(self, *inputs):
        """One request: the outputs (one array, or a tuple for several). With a reference (the framework's
        model), the outputs are compared with it and the errors kept in `last_check`."""
        outs = self.serve([inputs], inflight=1)[0]
        if self.check and self.reference is not None:
            ref = self.reference(*inputs)
            self.last_check = compare(outs, ref)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def serve(self, requests, inflight=4, threads=None, route="p2p"):
        """Run several requests (each a list of inputs) with up to `inflight` in flight (closed loop: request r
        enters when request r - inflight has left). Returns the outputs of each; the profile has latencies.
        threads=1 runs every card's work on one host thread (the same virtual timeline, for comparing the
        emulation's wall time); by default each card's queue drains on its own thread. route: how a value
        crosses cards, "p2p" (through the PCIe switch) or "host" (up to host memory and down again)."""
        if isinstance(inflight, bool) or not isinstance(inflight, int) or inflight < 1:
            raise InvalidArgument(f"serve: inflight must be a positive int, got {inflight!r}")
        if threads not in (None, 1):
            raise InvalidArgument(f"serve: threads must be None (one per card) or 1, got {threads!r}")
        if route not in ("p2p", "host"):
            raise InvalidArgument(f"serve: route must be 'p2p' or 'host', got {route!r}")
        reqs = [check_inputs(self.graph, list(r)) for r in requests]
        with self._lock:
            self._pin()
            return _Execution(self, reqs, inflight, one_thread=threads == 1, route=route).run()

    def _pin(self):
        """Keep the constants the cards' kernels read as they are (OpDef.resident: embedding tables) on the
        cards that run them, once: a request then reads the card's copy instead of copying the table in for
        every lookup. Pins a reset dropped are made again."""
        want = []
        for i, n in enumerate(self.graph.nodes):
            for pos in OPS[n.op].resident if n.op in OPS else ():
                v = self.graph.values.get(n.inputs[pos]) if pos < len(n.inputs) and n.inputs[pos] else None
                if v is None or not v.is_const or not v.data.flags.c_contiguous:
                    continue
                s = self.placement.stage[i]
                for c in ([s] if s is not None else range(self.placement.cards)):
                    want.append((self.devices[c], v.data))
        held = {(id(d), id(a)) for d, a in self._pins if d.card.is_pinned(a)}
        self._pins = [(d, a) for d, a in self._pins if (id(d), id(a)) in held]
        for d, a in want:
            if (id(d), id(a)) not in held:
                d.card.pin(a)
                self._pins.append((d, a))
                held.add((id(d), id(a)))

    def release(self):
        """Take this program's resident constants off the cards (the next serve puts them back)."""
        with self._lock:
            for d, a in self._pins:
                d.card.unpin(a)
            self._pins = []


def op_name(node):
    """The op as the user knows it: a foreign op by its framework's name."""
    return str(node.attrs.get("op", node.op)) if node.op == "foreign" else node.op


def _status_tuple(node, graph):
    status, detail = _static_status(node, graph)
    return status, node.source, detail


def _lowered(n, card, xs, attrs, pes):
    """The op's card lowering; an exception that is not vnpu's (operands its kernel does not take that the shape
    rule let through) becomes InvalidArgument naming the op and where it came from, never a raw error."""
    try:
        return OPS[n.op].card(card, xs, attrs, pes)
    except (VnpuError, NotLowered):
        raise
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, ZeroDivisionError) as e:
        raise InvalidArgument(f"{op_name(n)} at {n.source or n.name}: its kernel refused the operands "
                              f"{[None if x is None else f'{x.dtype}{list(x.shape)}' for x in xs]}: "
                              f"{type(e).__name__}: {e}") from None


class _Future:
    __slots__ = ("event", "value")

    def __init__(self):
        self.event = threading.Event()
        self.value = None

    def set(self, value):
        self.value = value
        self.event.set()

    def get(self):
        self.event.wait()
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


class _Execution:
    """One serve() call, in two phases. Emulation: a worker thread per card (Glow's DeviceManager) runs its
    ops' kernels in order, the cards in parallel on the host's cores (the Numba launches release the GIL),
    each op's inputs waiting for the ops that make them. Booking: one thread then books every op, copy and
    host op on the platform's virtual timeline in the global order (requests in order, ops in topological
    order), so the timeline does not depend on how the threads interleaved (shared links are booked in call
    order: docs/deviations.md 13.2). Values cross cards through device buffers and peer copies."""

    def __init__(self, program, requests, inflight, one_thread=False, route="p2p"):
        self.p, self.requests, self.inflight = program, requests, inflight
        self.one_thread, self.route = one_thread, route
        self.platform = program.platform
        self.devices = program.devices      # the program's card c is self.devices[c] (records name the device)
        self.queues = [d.queue() for d in self.devices[:program.placement.cards]]
        self.values = {}         # (request, value name) -> _Future of (array, card, buffer or None, event)
        self.copies = {}         # (request, value name, card) -> (buffer, event)
        self.records, self.transfers = [], []
        self.buffers = []
        self.done = {}
        self.lock = threading.Lock()
        self.arrays = {}         # (request, value name) -> _Future of the array (the emulation phase)
        self.computed = {}       # (request, node index) -> (outputs, launches, host ns, "card" | "host")
        # the run starts when the cards it uses are free (the platform may have served others before): every
        # worker thread's virtual clock starts there, so the timeline continues instead of restarting
        self.t0 = max([d.busy_until_ns for d in self.devices[:program.placement.cards]] + [self.platform.host_ns])

    def run(self):
        g, pl = self.p.graph, self.p.placement
        tasks = [[] for _ in self.queues]
        order = []               # every (card, request, node) in the global order (the one-thread run)
        for r in range(len(self.requests)):
            for name in g.outputs + g.inputs + [o for n in g.nodes for o in n.outputs]:
                self.values.setdefault((r, name), _Future())
            for i, n in enumerate(g.nodes):
                tasks[pl.card_of(i, r)].append((r, i))
                order.append((pl.card_of(i, r), r, i))
            # the outputs come back to the host from the card that made them
            tasks[self._out_card(r)].append((r, None))
            order.append((self._out_card(r), r, None))
        for r, arrays in enumerate(self.requests):
            for name, a in zip(g.inputs, arrays):
                if name in self.p.index_inputs and a.size and -2**31 <= a.min() and a.max() < 2**31:
                    a = a.astype(np.int32)       # an index out of int32's range stays int64 (and is refused)
                self.values[(r, name)].set((a, None, None, None))
                self.arrays.setdefault((r, name), _Future()).set(a)
            for n in g.nodes:
                for o in n.outputs:
                    self.arrays.setdefault((r, o), _Future())
        t0 = time.perf_counter()
        errors = []
        if self.one_thread:
            threads = [threading.Thread(target=self._emulate, args=([(r, i) for _, r, i in order if i is not None],
                                                                    errors), daemon=True)]
        else:
            threads = [threading.Thread(target=self._emulate, args=([t for t in tasks[c] if t[1] is not None],
                                                                    errors), daemon=True)
                       for c in range(len(self.queues)) if tasks[c]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not errors:
            booking = threading.Thread(target=self._worker_all, args=(order, errors), daemon=True)
            booking.start()
            booking.join()
        wall = time.perf_counter() - t0
        try:
            if errors:
                raise errors[0]
            for d in self.devices[:self.p.placement.cards]:
                d.check()           # a fault the booking made sticky (an injected hang, a DRAM error) fails the run
            outs = []
            reqs = []
            for r in range(len(self.requests)):
                arrays, start, end, _ = self.done[r]
                outs.append(arrays)
                reqs.append((r, start, end))
            self.p._profile = ProgramProfile(self.p, sorted(self.records, key=lambda x: (x.request, x.start_ns)),
                                             self.transfers, reqs, wall)
            return outs
        finally:
            for b in self.buffers:
                try:
                    b.free()
                except VnpuError:
                    pass
            for q in self.queues:
                q.destroy()

    def _out_card(self, r):
        g, pl = self.p.graph, self.p.placement
        prod = {o: i for i, n in enumerate(g.nodes) for o in n.outputs}
        last = [prod[o] for o in g.outputs if o in prod]
        return pl.card_of(max(last), r) if last else r % pl.cards

    def _emulate(self, tasks, errors):
        """The emulation phase for one card's ops (or all of them, one_thread): each op's kernels run on its card
        with its inputs (waiting for the ops that make them), no time booked."""
        g, p = self.p.graph, self.p
        try:
            for r, i in tasks:
                if errors:
                    return
                n = g.nodes[i]
                c = p.placement.card_of(i, r)
                xs = [None if not x else (g.values[x].data if g.values[x].is_const else self.arrays[(r, x)].get())
                      for x in n.inputs]
                attrs = dict(n.attrs)
                status = next(s for s in p._coverage if s.node == n.name).status
                outs, launches, host_ns, where = None, [], 0.0, "card"
                if status == "card":
                    try:
                        outs, launches = self.devices[c].compute(lambda card: _lowered(n, card, xs, attrs, p.pes))
                    except NotLowered as e:
                        if not p.allow_host:
                            raise UnsupportedOp(f"{op_name(n)} at {n.source or n.name} cannot run on the card: {e}; "
                                                f"compile with allow_host=True to run it on the host",
                                                op=op_name(n), source=n.source, needs=str(e)) from None
                        where = "host"
                else:
                    where = "host"
                if where == "host":
                    t0 = time.perf_counter()
                    try:
                        outs = OPS[n.op].host(xs, n.attrs)
                    except (VnpuError, NotLowered):
                        raise
                    except Exception as e:      # noqa: BLE001  (the user's framework code or numpy: named, typed)
                        raise InvalidArgument(f"{op_name(n)} at {n.source or n.name} failed on the host: "
                                              f"{type(e).__name__}: {e}") from None
                    host_ns = (time.perf_counter() - t0) * 1e9
                outs = [np.asarray(o) for o in outs]
                for o, name in zip(outs, n.outputs):
                    want = g.values[name]
                    if tuple(o.shape) != want.shape:
                        raise InvalidArgument(f"{n.op} at {n.source or n.name}: the card returned shape "
                                              f"{list(o.shape)} where the graph says {list(want.shape)} (a compiler "
                                              f"defect)")
                outs = [o.astype(g.values[name].dtype, copy=False) for o, name in zip(outs, n.outputs)]
                self.computed[(r, i)] = (outs, launches, host_ns, where)
                for o, name in zip(outs, n.outputs):
                    self.arrays[(r, name)].set(o)
        except BaseException as e:          # noqa: BLE001  (handed to the caller; the other workers stop)
            errors.append(e)
            for f in self.arrays.values():
                if not f.event.is_set():
                    f.set(e)

    def _worker_all(self, order, errors):
        self.platform.advance_host(self.t0)
        try:
            for c, r, i in order:
                if i is None:
                    self._finish_request(c, r)
                else:
                    self._run_node(c, r, i)
        except BaseException as e:          # noqa: BLE001
            errors.append(e)

    def _arrival_event(self, c, r):
        """Closed loop: request r enters when request r - inflight has left the platform."""
        k = r - self.inflight
        # the booking thread reaches request r after every op of request k (the global order)
        return None if k < 0 else self.done[k][3]

    def _on_card(self, c, r, name):
        """The value's array, with its data on card c at the event returned (a host-to-device copy for a
        graph input, a peer copy for a value of another card, nothing for one made here)."""
        g = self.p.graph
        v = g.values[name]
        if v.is_const:
            return v.data, None
        arr, card, buf, ev = self.values[(r, name)].get()
        if card == c:
            return arr, ev
        key = (r, name, c)
        if key in self.copies:
            return arr, self.copies[key][1]
        q = self.queues[c]
        dst = self.devices[c].alloc(max(1, arr.nbytes))
        self.buffers.append(dst)
        if card is None:                     # a graph input: from the host over PCIe
            arrive = self._arrival_event(c, r)
            if arrive is not None:
                q.wait(arrive)
            t0 = q.record().time_ns
            e = q.copy_to_device(dst, arr)
            self.transfers.append({"request": r, "value": name, "kind": "h2d", "card": self.devices[c].index,
                                   "bytes": arr.nbytes,
                                   "start_ns": t0, "end_ns": e.time_ns})
        elif self.route == "host" and arr.nbytes:   # another card's value, up to host memory and down again
            src_q = self.queues[card]
            src_q.wait(ev)
            staged = np.empty(arr.nbytes, np.uint8)
            src_q.copy_to_host(buf, out=staged)
            up = src_q.record()
            self.transfers.append({"request": r, "value": name, "kind": "d2h", "card": self.devices[card].index,
                                   "bytes": arr.nbytes,
                                   "end_ns": up.time_ns})
            q.wait(up)
            e = q.copy_to_device(dst, staged)
            self.transfers.append({"request": r, "value": name, "kind": "h2d", "card": self.devices[c].index,
                                   "bytes": arr.nbytes,
                                   "end_ns": e.time_ns})
        else:                                # another card's value: through the switch
            q.wait(ev)
            e = q.copy_peer(dst, buf, arr.nbytes) if arr.nbytes else ev
            self.transfers.append({"request": r, "value": name, "kind": "p2p", "card": self.devices[c].index,
                                   "from": self.devices[card].index, "bytes": arr.nbytes, "end_ns": e.time_ns})
        self.copies[key] = (dst, e)
        return arr, e

    def _run_node(self, c, r, i):
        """The booking phase for one op: its inputs' copies, its launches (or its host run) on the timeline, its
        results stored where other cards or the host will read them."""
        g = self.p.graph
        n = g.nodes[i]
        q = self.queues[c]
        xs = []
        for x in n.inputs:
            if not x:
                xs.append(None)
                continue
            arr, ev = self._on_card(c, r, x)
            if ev is not None:
                q.wait(ev)
            xs.append(arr)
        outs, launches, host_ns, where = self.computed[(r, i)]
        if where == "card":
            ev = q.book(launches, n.name)
        else:
            self._on_host(c, r, n, xs, outs, host_ns)
            ev = q.record()
        self._record(r, n, c, where, launches if where == "card" else [], ev, q)
        users = self._users_elsewhere(r, n, c)
        for o, name in zip(outs, n.outputs):
            buf = None
            if name in users or name in g.outputs:
                buf = self.devices[c].alloc(max(1, o.nbytes))
                self.buffers.append(buf)
                q.store(buf, o)
            self.values[(r, name)].set((o, c, buf, ev))

    def _users_elsewhere(self, r, n, c):
        g, pl = self.p.graph, self.p.placement
        names = set()
        for j, m in enumerate(g.nodes):
            if pl.card_of(j, r) != c:
                names.update(x for x in m.inputs if x in n.outputs)
        return names

    def _on_host(self, c, r, n, xs, outs, host_ns):
        """An op the card cannot run, on the host (run in the emulation phase; booked here): its operands cross
        PCIe to the host, its measured wall time passes on the booking thread's virtual clock, its results cross
        back."""
        q = self.queues[c]
        for x, a in zip(n.inputs, xs):
            if x and a is not None and not self.p.graph.values[x].is_const and a.nbytes:
                b = self.devices[c].alloc(a.nbytes)
                self.buffers.append(b)
                q.store(b, a)
                q.copy_to_host(b, dtype=np.uint8)
                self.transfers.append({"request": r, "value": x, "kind": "d2h", "card": self.devices[c].index,
                                       "bytes": a.nbytes,
                                       "end_ns": q.tail_ns})
        q.synchronize()
        self.platform.advance_host(self.platform.host_ns + host_ns)
        self.platform.trace.api(f"host op {n.op} ({n.name})", self.platform.host_ns, {"ns": host_ns})
        for name, a in zip(n.outputs, outs):
            if a.nbytes:
                b = self.devices[c].alloc(a.nbytes)
                self.buffers.append(b)
                q.copy_to_device(b, np.ascontiguousarray(a))
                self.transfers.append({"request": r, "value": name, "kind": "h2d", "card": self.devices[c].index,
                                       "bytes": a.nbytes,
                                       "end_ns": q.tail_ns})

    def _record(self, r, n, c, where, launches, ev, q):
        """One op's record: its launches' cycles, bytes and energy summed; the unit utilizations and the bound
        of its longest launch."""
        from vnpu.emulator.power import launch_energy
        g = self.p.graph
        energy = peak_w = launch_ns = 0.0
        if where == "card" and launches:
            longest = max(launches, key=lambda x: x.cycles)
            s = longest.summary()
            units = {k: v.get("utilization", 0.0) for k, v in s.get("units", {}).items()}
            cycles = sum(x.cycles for x in launches)
            kernels = [x.kernel for x in launches]
            byts, macs = {}, 0
            for x in launches:
                sx = x.summary()
                macs += int(sx.get("macs", 0))
                for k, v in sx.get("bytes", {}).items():
                    byts[k] = byts.get(k, 0) + v
            bound = _bound(s)
            dt = g.values[n.inputs[0]].dtype if n.inputs and n.inputs[0] else "float32"
            mac = {"int8": "int8", "float16": "fp16"}.get(dt, "fp32")
            lanes = {"float16": "fp16", "int8": "int8"}.get(dt, "fp32")
            # priced at the operating point each launch was booked at (the power cap may have slowed it)
            booked = q.last_bookings if len(q.last_bookings) == len(launches) else [None] * len(launches)
            joules = [launch_energy(x, mac_dtype=mac, vector_dtype=lanes,
                                    clock_ghz=None if b is None else b[3])["total_j"] for x, b in zip(launches, booked)]
            energy = sum(joules)
            times = [x.seconds * 1e9 if b is None else b[1] - b[0] for x, b in zip(launches, booked)]
            launch_ns = sum(times)
            peak_w = max((j / (t * 1e-9) for j, t in zip(joules, times) if t > 0), default=0.0)
        else:
            units, cycles, kernels, byts, macs = {}, 0, [], {}, 0
            bound = "host" if where == "host" else "none (no launch)"
        end = ev.time_ns if ev is not None else q.tail_ns
        start = end - cycles / self.devices[c].config.clock_ghz if where == "card" else end
        wm = sorted({self.p.placement.weight_memory.get(x, "") for x in n.inputs if x and g.values[x].is_const} - {""})
        with self.lock:
            self.records.append(OpRecord(r, n.name, n.op, self.devices[c].index, where, kernels, cycles, start, end,
                                         units, byts, bound,
                                         n.source, ",".join(wm), energy, peak_w, launch_ns, macs))

    def _finish_request(self, c, r):
        g = self.p.graph
        q = self.queues[c]
        outs = []
        start = None
        for name in g.outputs:
            arr, card, buf, ev = self.values[(r, name)].get()
            if card is None:                 # an output that is an input: never on a card
                outs.append(arr)
                continue
            if ev is not None:
                q.wait(ev)
            b = buf
            if card != c:
                b, e = self.copies.get((r, name, c)) or (None, None)
                if b is None:
                    _, e = self._on_card(c, r, name)
                    b = self.copies[(r, name, c)][0]
                q.wait(e)
            host = q.copy_to_host(b, dtype=np.uint8)
            outs.append(host[:arr.nbytes].view(arr.dtype).reshape(arr.shape).copy() if arr.nbytes else arr.copy())
            self.transfers.append({"request": r, "value": name, "kind": "d2h", "card": self.devices[c].index,
                                   "bytes": arr.nbytes,
                                   "end_ns": q.tail_ns})
        first = [t for t in self.transfers if t["request"] == r and t["kind"] == "h2d" and "start_ns" in t]
        start = min([t["start_ns"] for t in first] + [self.t0 if r < self.inflight else
                                                      self.done.get(r - self.inflight, (None, 0, 0, None))[2]])
        ev = q.record()
        with self.lock:
            self.done[r] = (outs, start, ev.time_ns, ev)


def compare(outputs, reference):
    """Per output: max abs error, max error relative to the reference's largest magnitude, cosine similarity,
    and for 2-D float outputs (classifier scores) the top-1 agreement."""
    ref = reference if isinstance(reference, (list, tuple)) else [reference]
    report = []
    for o, r in zip(outputs, ref):
        o64, r64 = np.asarray(o, np.float64), np.asarray(r, np.float64)
        if o64.shape != r64.shape:
            report.append({"shape": list(o64.shape), "reference_shape": list(r64.shape), "match": False})
            continue
        fin = np.isfinite(r64) & np.isfinite(o64)
        err = np.abs(o64 - r64)[fin]
        mag = float(np.abs(r64[fin]).max()) if fin.any() else 0.0
        num = float((o64[fin] * r64[fin]).sum())
        den = float(np.sqrt((o64[fin] ** 2).sum() * (r64[fin] ** 2).sum()))
        entry = {"shape": list(o64.shape), "max_abs": float(err.max()) if err.size else 0.0,
                 "max_rel": float(err.max() / mag) if err.size and mag else 0.0,
                 "cosine": num / den if den else 1.0,
                 "nan_agree": bool(np.array_equal(np.isnan(o64), np.isnan(r64)))}
        if o64.ndim == 2 and o64.shape[1] > 1:
            entry["top1"] = float((o64.argmax(1) == r64.argmax(1)).mean())
        report.append(entry)
    return report


def compile(model, example_inputs=None, *, cards=6, dtype="fp32", strategy="auto", platform=None,  # noqa: A001
            allow_host=False, calibration=None, batch=None, pes=None, check=True, optimize=True):
    """Compile a model for the platform's cards. model: a torch.nn.Module (with example_inputs), a
    torch.export.ExportedProgram, an ONNX ModelProto or .onnx path, a vnpu Graph, or a built-in model name
    ("resnet50", "bert", "rm1"...). dtype: "fp32", "fp16" or "int8" (post-training quantization calibrated on
    `calibration`, a list of input tuples; default: the example inputs). Returns a Program."""
    if dtype not in DTYPES:
        raise InvalidArgument(f"compile: dtype must be one of fp32, fp16, int8, got {dtype!r}")
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"compile: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if platform is None:
        if isinstance(cards, bool) or not isinstance(cards, int) or not 1 <= cards <= 64:
            raise InvalidArgument(f"compile: cards must be an int from 1 to 64, got {cards!r}")
        from vnpu.driver.platform import Platform
        platform = Platform(cards=cards)
    else:
        cards = min(cards, len(platform.devices)) if isinstance(cards, int) else len(platform.devices)
    graph = to_graph(model, example_inputs, batch)
    reference = _framework_reference(model, graph)
    samples = calibration
    if DTYPES[dtype] == "int8" and samples is None:
        samples = [example_inputs] if example_inputs is not None else [_random_inputs(graph, s) for s in range(4)]
    samples = [[np.asarray(_np(x)) for x in s] for s in samples] if samples else samples
    g = passes.optimize(graph, DTYPES[dtype], samples) if optimize else passes.infer_shapes(graph)
    cfg = platform.devices[0].config
    link = platform.switch.cards[0].config.effective_gbps("p2p")
    placement = partition(g, cards, strategy, cfg, link)
    return Program(g, platform, placement, dtype, allow_host, reference, pes, check)


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x


def _random_inputs(graph, seed):
    """Inputs valid for the graph (indices within their tables, offsets in order): built-in models' rule."""
    from .models import example_inputs
    return example_inputs(graph, seed=seed)


def _framework_reference(model, graph):
    """A function computing the model's outputs with its own framework (PyTorch eager, onnxruntime), or the
    graph's numpy implementation for a vnpu Graph."""
    if isinstance(model, Graph) or isinstance(model, str) and not model.endswith(".onnx"):
        g = graph
        return lambda *xs: run_host(g, [np.asarray(x) for x in xs])
    mod = type(model).__module__ or ""
    if mod.startswith("torch") or hasattr(model, "forward"):
        def torch_ref(*xs):
            import torch
            m = model.module() if type(model).__name__ == "ExportedProgram" else model
            with torch.no_grad():
                out = m(*[torch.from_numpy(np.ascontiguousarray(x)) for x in xs])
            out = out if isinstance(out, (list, tuple)) else [out]
            return [o.detach().numpy() for o in out]
        return torch_ref
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path_or_bytes = model if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__") else \
        model.SerializeToString()

    def ort_ref(*xs):
        sess = ort.InferenceSession(str(path_or_bytes) if not isinstance(path_or_bytes, bytes) else path_or_bytes,
                                    providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        return sess.run(None, dict(zip(names, xs)))
    return ort_ref
