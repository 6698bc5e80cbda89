"""Runs a model's batches on the cards (Glow's HostManager + Executor, for DLRM), through the driver API.

Per request: the indices and offsets of each table go host to card, to the card holding the table, which
pools the lookups on its embedding unit (fp16 rows); the pooled rows go card to card through the switch
(or through the host, route="host") to the request's dense card (round robin over the cards alive), into
a table-major staging buffer [T, B, D]; that card runs the bottom MLP (the library's gemm, built with
`vnpu.kernels.dense.build_gemm`), assembles the pooled rows sample-major [B, T, D] (a DMA program), runs
the library's dot interaction (`vnpu.kernels.interaction`, fp16 rows out, or int8 rows for an int8 top
layer), the top MLP, and the scores go back to the host. Everything is issued asynchronously on queues,
on the platform's virtual timeline.

The executor also keeps the model loaded: `load_card` after a reset, `lose` when a card is gone (its
tables are placed again over the cards alive). What to do about a fault is the serving policy's call
(vnpu.runtime.serving).
"""
from __future__ import annotations

import numpy as np

from vnpu.errors import DeviceLost, InvalidArgument
from vnpu.kernels import interaction as inter_k
from vnpu.kernels.builder import KernelBuilder
from vnpu.kernels.dense import build_gemm, pack_weights, qparam
from vnpu.kernels.embedding import EmbeddingArgs, descriptor, kernel_image

from .model import DLRM
from .partitioner import partition_graph


def gather_module(blocks):
    """A DMA program: for each (dst_off, src_off, row_bytes, rows, src_stride, dst_stride), a 2-D copy from
    `src` to `dst`; the blocks are split over the PEs."""
    kb = KernelBuilder()
    with kb.kernel("gather", src=("buffer", "u8"), dst=("buffer", "u8")) as k:
        pe, s, d = k.regs("pe", "s", "d")
        k.csrr(pe, "pe_id")
        npe = k.reg("npe")
        k.csrr(npe, "pe_count")
        for i, (doff, soff, rb, rows, ss, ds) in enumerate(blocks):
            mine = k.reg("mine")
            k.const(mine, i)
            k.rem(mine, mine, npe)
            with k.if_("eq", mine, pe):
                k.const(s, soff)
                k.add(s, s, k.args.src)
                k.const(d, doff)
                k.add(d, d, k.args.dst)
                k.copy(0, d, s, rb, 0, rows=rows, src_stride=ss, dst_stride=ds)
                k.wait(0, 1)
            k.release(mine)
    return kb.build()


class Executor:
    """Serves DLRM requests of `batch` samples on a platform.

    route: "p2p" sends pooled embeddings card to card through the switch; "host" sends them through the
    host (device to host, then host to device), for comparison. inflight: queues per card (requests in
    flight at once). pes: the PEs the dense card's kernels use (all by default).
    """

    def __init__(self, platform, model: DLRM, batch, inflight=4, route="p2p", pes=None):
        from vnpu.driver.platform import Platform
        if not isinstance(platform, Platform):
            raise InvalidArgument(f"Executor: platform must be a vnpu.Platform, got {type(platform).__name__}")
        if not isinstance(model, DLRM):
            raise InvalidArgument(f"Executor: model must be a vnpu.runtime.DLRM, got {type(model).__name__}")
        for name, v in (("batch", batch), ("inflight", inflight)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidArgument(f"Executor: {name} must be a positive integer, got {v!r}")
        if route not in ("p2p", "host"):
            raise InvalidArgument(f"route must be 'p2p' or 'host', got {route!r}")
        self.platform, self.model, self.batch, self.route = platform, model, batch, route
        self.cfg = c = model.cfg
        self.devices = platform.devices
        self.graph = model.graph()
        self.alive = [i for i, d in enumerate(self.devices) if not d.is_lost]
        self.plan()
        self.inflight = inflight
        self.pes = pes
        self.queues = [[d.queue() for _ in range(inflight)] if not d.is_lost else [] for d in self.devices]
        self._temps = []
        B, T, D = batch, c.tables, c.dim
        config = self.devices[0].config
        use = config.pes if pes is None else len(pes)
        # images: per MLP layer a gemm specialized to (B, K, N); the interaction; the assemble DMA program;
        # the embedding kernel
        self.layers = {"bottom": [], "top": []}
        nb = len(model.bottom)
        for i in range(nb + len(model.top)):
            part = "bottom" if i < nb else "top"
            w, scale, b, out_scale, out_zp = model.layer_args(i)
            K, N = w.shape
            last = i == nb + len(model.top) - 1
            epi = "dequant" if last else ("requant" if out_scale is not None else "half")
            dt = "i8" if w.dtype == np.int8 else "f16"
            img, info = build_gemm(B, K, N, dtype=dt, epilogue=epi, bias=True, pes=use, config=config,
                                   activation="sigmoid" if last else "relu")
            extra = [scale] if dt == "i8" else []
            q = qparam(np.float32(1.0) / np.float32(out_scale), out_zp) if epi == "requant" else None
            self.layers[part].append((img, pack_weights(w[None], info["nt"]), extra + [b], K, N, last, q))
        # the interaction: fp16 rows for an fp16 first top layer, int8 rows (its input scale) for an int8 one
        int8_top = c.dense_dtype == "int8" and model.int8_layers[nb]
        out = "i8" if int8_top else "f16"
        S = inter_k.choose_tile(D, T, "f16", B, use, config.local_memory.bytes, out)
        if S < 1:
            raise InvalidArgument(f"executor: the interaction of {T} tables of dim {D} does not fit a PE's local "
                                  f"memory ({config.local_memory.bytes} bytes)")
        self.inter_out_bytes = 1 if int8_top else 2
        self.inter_img = inter_k.build_kernel(D, T, "f16", S, config.dma.engines_per_pe >= 2, out=out,
                                              out_scale=model.act_scales[nb] if int8_top else None,
                                              out_zero_point=model.act_zero_points[nb] if int8_top else 0)
        # table-major staging [T, B, D] -> sample-major [B, T, D]
        self.assemble_img = gather_module([(t * D * 2, t * B * D * 2, D * 2, B, D * 2, T * D * 2)
                                           for t in range(T)])
        self.emb_img = kernel_image()
        self.loaded = []
        self.unloaded = False
        self.load()

    # --- the model on the cards ------------------------------------------------------------------------------
    def plan(self):
        """Place the sharded nodes over the cards alive (device indices in the placement)."""
        self.placement = partition_graph(self.graph, len(self.alive)).on_cards(self.alive)

    def load(self):
        """Put the model on the cards: tables where the partitioner placed them, dense weights everywhere.
        A card lost on the way is dropped and the tables are placed again over the others."""
        self.loaded = [None] * len(self.devices)
        for ci in list(self.alive):
            try:
                self.load_card(ci)
            except DeviceLost:
                self.lose(ci)
                return

    def lose(self, ci):
        """Card ci is gone: re-place its tables over the surviving cards and reload them."""
        if ci in self.alive:
            self.alive.remove(ci)
        if not self.alive:
            raise DeviceLost("every card of the platform is lost")
        for d in self.devices:
            if not d.is_lost:
                d.reset()
        self.plan()
        self.load()

    def load_card(self, ci):
        """Load one card's share of the model (again, after a reset)."""
        dev = self.devices[ci]
        q = self.queues[ci][0]
        held = {"modules": [], "buffers": []}       # what unload() gives back

        def load(img, name):
            mod = dev.load(img)
            held["modules"].append(mod)
            return mod[name]

        def put(array):
            buf = dev.alloc(array.nbytes)
            held["buffers"].append(buf)
            q.copy_to_device(buf, array)
            return buf
        per = {"emb": load(self.emb_img, "embedding_bag"), "inter": load(self.inter_img, "dot_interaction"),
               "assemble": load(self.assemble_img, "gather"), "bottom": [], "top": [], "tables": {}, **held}
        for part in ("bottom", "top"):
            for img, wp, vecs, K, N, last, qp in self.layers[part]:
                kern = load(img, "gemm")
                per[part].append((kern, put(wp), [put(v) for v in vecs], K, N, last, qp))   # [scale,] bias
        for t in self.placement.tables_on(ci):
            per["tables"][t] = put(self.model.tables[t])   # straight from the model's packed table: no copy
        q.synchronize()
        self.loaded[ci] = per

    def unload(self):
        """Take the model off the cards: free its tables and dense weights and unload its kernels on every card
        that still holds them (a reset or a lost link already took them). The executor serves no more requests
        afterwards. serve() does this when it is done, so consecutive runs (the demo's batch sizes, each with its
        own executor) hold one copy of the tables on the cards at a time, not one per run."""
        self.release()
        for ci, per in enumerate(self.loaded):
            dev = self.devices[ci]
            if per is None or dev.is_lost or dev.fault is not None:
                continue
            for buf in per["buffers"]:
                if not buf.freed and buf.generation == dev.generation:
                    buf.free()
            for mod in per["modules"]:
                if not mod.unloaded and mod.generation == dev.generation:
                    mod.unload()
        self.loaded = [None] * len(self.devices)
        self.unloaded = True

    # --- one request --------------------------------------------------------------------------------------------
    def _check_request(self, r, dense, lookups):
        """A request is what DLRM.make_request gives for this executor's batch: nothing else reaches a card."""
        c, B = self.cfg, self.batch
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
            raise InvalidArgument(f"submit: request number must be an integer >= 0, got {r!r}")
        if not isinstance(dense, np.ndarray) or dense.dtype != np.float16 or dense.shape != (B, c.dense_features):
            got = f"{dense.dtype} {dense.shape}" if isinstance(dense, np.ndarray) else type(dense).__name__
            raise InvalidArgument(f"submit: dense features must be a float16 array of shape ({B}, "
                                  f"{c.dense_features}), got {got}")
        if not isinstance(lookups, (list, tuple)) or len(lookups) != c.tables:
            n = len(lookups) if isinstance(lookups, (list, tuple)) else type(lookups).__name__
            raise InvalidArgument(f"submit: lookups must be a list of {c.tables} (indices, offsets) pairs, got {n}")
        for t, pair in enumerate(lookups):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(
                    isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype.kind in "iu" for a in pair):
                raise InvalidArgument(f"submit: lookups[{t}] must be (indices, offsets), 1-D integer arrays")
            if len(pair[1]) != B:
                raise InvalidArgument(f"submit: lookups[{t}] has {len(pair[1])} offsets; the batch is {B}")

    def submit(self, r, dense, lookups, arrival_ns=0.0):
        """Issue request r (all of it, asynchronously) by walking the model graph; returns (output host
        array, start event, end event)."""
        c, B = self.cfg, self.batch
        T, D = c.tables, c.dim
        if self.unloaded:
            raise InvalidArgument("submit: the executor's model was unloaded from the cards (Executor.unload)")
        self._check_request(r, dense, lookups)
        dc = self.alive[r % len(self.alive)]                # the request's dense card (round robin)
        slot = r % self.inflight
        ddev, dq = self.devices[dc], self.queues[dc][slot]
        self.platform.advance_host(arrival_ns)
        start = dq.record()
        ld = self.loaded[dc]
        temps = self._temps

        def alloc(dev, nbytes):
            buf = dev.alloc(nbytes)
            temps.append((dev, buf))
            return buf
        where = {}                                          # tensor -> (card, queue, buffer)
        act_bytes = 2                                       # int8 or fp16 activations: room for either
        for node in self.graph.nodes:
            if node.op == "embedding_bag":
                t = node.index
                card = self.placement.table_card[t]
                dev, q = self.devices[card], self.queues[card][slot]
                idx, off = lookups[t]
                args = EmbeddingArgs(self.model.tables[t], idx, offsets=off, format=c.table_format,
                                     out_dtype="fp16", dim=c.dim)
                ib, ob, pb, db = alloc(dev, idx.nbytes), alloc(dev, off.nbytes), alloc(dev, B * D * 2), alloc(dev, 128)
                tb = self.loaded[card]["tables"][t]
                desc = descriptor(args, tb.device_address, ib.device_address, ob.device_address, 0, pb.device_address)
                q.copy_to_device(ib, idx)
                q.copy_to_device(ob, off)
                q.copy_to_device(db, desc)
                q.launch(self.loaded[card]["emb"], db, pes=[0])
                where[node.output] = (card, q, pb)
            elif node.op == "fc":
                kern, wb, bufs, K, N, last, qp = (ld["bottom"] + ld["top"])[node.index]
                src = node.inputs[0]
                if src == "dense":
                    host_x = self.model.host_input(dense)
                    x = alloc(ddev, host_x.nbytes)
                    dq.copy_to_device(x, host_x)
                else:
                    x = where[src][2]
                y = alloc(ddev, B * N * (4 if last else act_bytes))
                dq.launch(kern, x, wb, *bufs, y, *([qp] if qp is not None else []), pes=self.pes)
                where[node.output] = (dc, dq, y)
            elif node.op == "assemble":
                # every pooled block to the dense card, into its table's slot of the staging buffer, then
                # sample-major
                stage = alloc(ddev, T * B * D * 2)
                for t, name in enumerate(node.inputs):
                    card, q, buf = where[name]
                    if self.route == "p2p":
                        dq.wait(q.record())
                        dq.copy_peer(stage, buf, B * D * 2, dst_offset=t * B * D * 2)
                    else:
                        host = q.copy_to_host(buf)
                        dq.wait(q.record())
                        dq.copy_to_device(stage, host, offset=t * B * D * 2)
                emb = alloc(ddev, T * B * D * 2)
                dq.launch(ld["assemble"], stage, emb, pes=self.pes)
                where[node.output] = (dc, dq, emb)
            elif node.op == "interaction":
                inter = alloc(ddev, B * c.interaction_width * self.inter_out_bytes)
                x, emb = (where[name][2] for name in node.inputs)
                dq.launch(ld["inter"], x, emb, inter, B, pes=self.pes)
                where[node.output] = (dc, dq, inter)
            else:
                raise InvalidArgument(f"no handler for op {node.op!r} of node {node.name}")
        out = dq.copy_to_host(where[self.graph.output][2], dtype=np.float32)
        end = dq.record()
        return out.reshape(B, 1), start, end

    def drop_temps(self):
        """Forget the temporaries of the requests issued so far (a reset frees them on a faulted card; free
        the rest)."""
        for dev, buf in self._temps:
            if dev.fault is None and not dev.is_lost and not buf.freed and buf.generation == dev.generation:
                buf.free()
        self._temps = []

    def release(self):
        """Free every request's temporaries."""
        for dev, buf in self._temps:
            if not buf.freed and buf.generation == dev.generation:
                buf.free()
        self._temps = []
