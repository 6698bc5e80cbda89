"""One Chrome trace for the whole platform: host API calls, queue operations, each PCIe link direction and
every card's units, on one virtual timeline (Perfetto opens it).

Processes: "host" (pid 0: one track per host thread's calls), "PCIe" (pid 1: one track per link
direction), and "card N" (pid 10 + N: a track per queue, and the card's PE / unit / DMA tracks of each
launch, shifted to where the launch ran).
"""
from __future__ import annotations

import json
import threading

from vnpu.errors import VnpuError

HOST_PID, PCIE_PID, CARD_PID0 = 0, 1, 10
QUEUE_TID0 = 100000


class PlatformTrace:
    def __init__(self, platform):
        self.platform = platform
        self.enabled = False
        self.events = []
        self.lock = threading.Lock()
        self._link_tids = {}
        self._queue_tracks = {}      # (pid, tid) -> name of every queue that put an event on the trace

    def start(self):
        with self.lock:
            self.enabled = True
            self.events = []
            self._queue_tracks = {}

    def stop(self):
        self.enabled = False

    def _add(self, *events):
        if self.enabled:
            with self.lock:
                self.events.extend(events)

    @staticmethod
    def _x(name, pid, tid, start_ns, end_ns, args=None, cat="vnpu"):
        return {"name": name, "ph": "X", "pid": pid, "tid": tid, "ts": start_ns / 1000.0,
                "dur": max(0.0, (end_ns - start_ns) / 1000.0), "cat": cat, "args": args or {}}

    def link(self, kind, card, start_ns, end_ns, nbytes, peer=None):
        if not self.enabled:
            return
        evs = []
        for link, direction in self.platform.switch.route(kind, card, peer):
            key = f"{link.name} {direction}"
            tid = self._link_tids.setdefault(key, len(self._link_tids) + 1)
            name = kind if peer is None else f"p2p card {card} -> card {peer}"
            evs.append(self._x(name, PCIE_PID, tid, start_ns, end_ns, {"bytes": nbytes}, "pcie"))
        self._add(*evs)

    def power(self, device, start_ns, end_ns, watts):
        """The card's power counter track: the launch's average watts over its time, the idle card's after."""
        if not self.enabled:
            return
        from vnpu.emulator.power import idle_power
        pid = CARD_PID0 + device.index
        self._add({"name": "power (W)", "ph": "C", "pid": pid, "ts": start_ns / 1000.0, "args": {"W": watts}},
                  {"name": "power (W)", "ph": "C", "pid": pid, "ts": end_ns / 1000.0,
                   "args": {"W": idle_power(device.config)}})

    def queue_op(self, queue, name, start_ns, end_ns, args=None):
        if self.enabled:
            key = (CARD_PID0 + queue.device.index, QUEUE_TID0 + queue.id)
            self._queue_tracks[key] = f"queue {queue.id}"    # named even when the queue is gone by write time
            self._add(self._x(name, *key, start_ns, end_ns, args, "queue"))

    def launch(self, queue, kernel, start_ns, result):
        if self.enabled and result.events is not None and len(result.events):
            trace = result.chrome_trace(card_name=f"card {queue.device.index}",
                                        pid=CARD_PID0 + queue.device.index, start_ns=start_ns)
            self._add(*[e for e in trace["traceEvents"] if e.get("name") != "process_name"])

    def api(self, name, t_ns, args=None):
        if self.enabled:
            tid = threading.get_ident() % 100000
            self._add({"name": name, "ph": "i", "s": "t", "pid": HOST_PID, "tid": tid, "ts": t_ns / 1000.0,
                       "args": args or {}})

    def metadata(self):
        meta = [{"name": "process_name", "ph": "M", "pid": HOST_PID, "args": {"name": "host"}},
                {"name": "process_name", "ph": "M", "pid": PCIE_PID, "args": {"name": "PCIe"}}]
        for key, tid in self._link_tids.items():
            meta.append({"name": "thread_name", "ph": "M", "pid": PCIE_PID, "tid": tid, "args": {"name": key}})
        for d in self.platform.devices:
            pid = CARD_PID0 + d.index
            meta.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"card {d.index}"}})
            meta.append({"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}})
            tracks = {**{(pid, QUEUE_TID0 + q.id): f"queue {q.id}" for q in d.queues},
                      **{k: v for k, v in self._queue_tracks.items() if k[0] == pid}}
            for (_, tid), name in sorted(tracks.items()):
                meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
        return meta

    def to_json(self):
        with self.lock:
            seen, events = set(), []
            for e in self.events:   # launches repeat their track names: keep one of each
                if e.get("ph") == "M":
                    key = (e["pid"], e.get("tid"), e["name"])
                    if key in seen:
                        continue
                    seen.add(key)
                events.append(e)
            return {"traceEvents": self.metadata() + events, "displayTimeUnit": "ns"}

    def write(self, path):
        try:
            with open(path, "w") as f:
                json.dump(self.to_json(), f)
        except OSError as e:
            raise VnpuError(f"cannot write trace {path}: {e.strerror}") from None
