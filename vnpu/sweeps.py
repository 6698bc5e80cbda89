"""Design-space sweeps on Dask (issue 19, first version): `vnpu sweep` and `vnpu.sweep.sweep(space, workload)`.

A sweep is a set of points: card-config overrides (a grid over `--set KEY=V1,V2,...`, or a random sample
of it) times op parameters (`--param KEY=V1,V2`). Each point builds its card, runs the op once on random
inputs and becomes one row: the point's keys and its figures (cycles, seconds, utilization per unit, DRAM
bytes, energy, power, area), or its error. Points run as Dask tasks, on a LocalCluster the command starts or
on an existing cluster (`--scheduler`); each finished row is cached on disk under a hash of (configuration,
workload, vnpu version), so an interrupted sweep resumes and a repeated one is free. docs/sweep.md.

dask, pandas and pyarrow are an optional extra (`pip install 'vnpu[sweep]'`), imported only when a sweep runs.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import socket
import sys
import time

from vnpu.cli import extra_command
from vnpu.errors import InvalidArgument, VnpuError

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "vnpu", "sweep")
# figure columns of a row (inputs come first: the override keys, "config", "op", "param.*")
FIGURES = ("cycles", "seconds", "ops", "ops_per_s", "macs", "util.pe", "util.matrix", "util.vector", "util.dma",
           "util.embedding", "dram_read_bytes", "dram_write_bytes", "dram_bytes", "sram_bytes", "energy_j",
           "power_w", "tops_per_w", "area_mm2", "error")
# figure columns of a model workload's row (inputs: the card keys, platform.* keys, "model", "batch", "dtype",
# "requests", "inflight", "option.*")
MODEL_FIGURES = ("cards", "latency_p50_us", "latency_p90_us", "latency_p99_us", "items_per_s", "makespan_us",
                 "energy_j", "card_energy_j", "pcie_energy_j", "items_per_j", "power_w", "area_mm2", "card_area_mm2",
                 "strategy", "error")
# a model point's serving scenario: `requests` requests of `batch` items, `inflight` of them in flight (closed
# loop, as `vnpu serve`: request r enters when request r - inflight has left; None: as many as cards)
MODEL_PARAMS = {"batch": 1, "dtype": "fp32", "requests": 8, "inflight": None}
INT_FIGURES = ("cycles", "ops", "macs", "dram_read_bytes", "dram_write_bytes", "dram_bytes", "sram_bytes")
# not figures of the design point: where and how fast it ran (left out when sweeps are compared)
RUN_COLUMNS = ("key", "wall_s", "cpu_s", "warm", "worker", "cached")


def need(module):
    """Import an optional dependency of the sweep extra, or a one-line error naming the extra."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidArgument(f"vnpu sweep needs {module.split('.')[0]}: pip install 'vnpu[sweep]' (dask[distributed], "
                              f"pandas, pyarrow, matplotlib, tqdm)") from None


# ---------------------------------------------------------------------------------------------- the space
def _value(text):
    from vnpu.emulator.config import _parse_value
    v = _parse_value(text.strip())
    if isinstance(v, str):          # YAML 1.1 reads 1e-5 as a string
        try:
            return float(v)
        except ValueError:
            return v
    return v


def parse_axes(items, what="--set"):
    """["matrix.rows=16,32", "dram.gbps=34"] -> {"matrix.rows": [16, 32], "dram.gbps": [34]}."""
    axes = {}
    for item in items or ():
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise InvalidArgument(f"{what} {item!r} must look like KEY=V1,V2,..., e.g. matrix.rows=16,32")
        if key in axes:
            raise InvalidArgument(f"{what} {key} is given twice")
        axes[key] = [_value(v) for v in values.split(",") if v.strip()]
    return axes


def grid(axes: dict) -> list:
    """Every combination of the axes' values, as a list of {key: value}."""
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def sample(axes: dict, n: int, seed: int = 0) -> list:
    """n points drawn from the grid: without repetition while n <= its size, else uniformly with repetition
    removed (so at most the grid's size)."""
    if n < 1:
        raise InvalidArgument(f"--samples must be >= 1, got {n}")
    full = grid(axes)
    rng = random.Random(seed)
    if n >= len(full):
        return full
    return [full[i] for i in sorted(rng.sample(range(len(full)), n))]


def latin_hypercube(axes: dict, n: int, seed: int = 0) -> list:
    """n points over the axes, each axis's listed values taken as its levels: every level of an axis appears
    n // levels or n // levels + 1 times (as evenly as possible), the levels' order shuffled per axis with
    `seed`. Points may repeat when n exceeds the grid (a repeated point is run once)."""
    if n < 1:
        raise InvalidArgument(f"--lhs must be >= 1, got {n}")
    rng = random.Random(seed)
    columns = {}
    for key, values in axes.items():
        if not values:
            raise InvalidArgument(f"axis {key} has no values")
        levels = [values[i % len(values)] for i in range(n)]
        rng.shuffle(levels)
        columns[key] = levels
    return [{k: columns[k][i] for k in axes} for i in range(n)]


METHODS = ("grid", "random", "lhs")


def points_of(space, params=None, samples=None, seed=0, method=None) -> list:
    """The points of a space: a dict of axes ({key: [values]}) or a list of override dicts; op params
    likewise ({param: [values]} multiplies the points). method: "grid" (every combination), "random"
    (`samples` points of the grid) or "lhs" (a Latin hypercube of `samples` points); default "random" when
    samples is given, else "grid". Returns a list of (overrides, params)."""
    if space is None:
        space = {}
    method = method or ("random" if samples else "grid")
    if method not in METHODS:
        raise InvalidArgument(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "grid" and samples is None:
        raise InvalidArgument(f"method {method!r} needs samples=N")
    if isinstance(space, dict):
        axes = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in space.items()}
        cards = {"grid": lambda: grid(axes), "random": lambda: sample(axes, samples, seed),
                 "lhs": lambda: latin_hypercube(axes, samples, seed)}[method]()
    else:
        cards = [dict(p) for p in space]
    paxes = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in (params or {}).items()}
    return [(c, p) for c in cards for p in grid(paxes)]


# ---------------------------------------------------------------------------------------------- one point
def point_key(config, overrides, workload, params, seed=0) -> str:
    """sha256 of (card config, overrides, workload, its params, input seed, vnpu version): the cache key."""
    import vnpu
    blob = json.dumps({"config": config, "overrides": overrides, "workload": workload, "params": params,
                       "seed": seed, "version": vnpu.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


_RUN_IN_PROCESS = [0]     # points this process has run: the first pays for the kernels' compile


BUILTIN_MODELS = ("resnet50", "bert", "bert-base", "rm1", "rm2", "rm3")


def is_imported(spec):
    """A --model that is not a built-in name: a .onnx file or `module:callable` (as `vnpu profile` takes)."""
    return isinstance(spec, str) and (spec.endswith(".onnx") or ":" in spec)


def _imported_source(spec):
    """(spec with its file made absolute, sha256 of the file): the file's content is part of the cache key, so
    an edited model is a new point. Checked here, on the client, so a missing file is a usage error."""
    path, fn = (spec, None) if spec.endswith(".onnx") else spec.rsplit(":", 1)
    if fn is not None and not fn.strip():
        raise InvalidArgument(f"--model {spec}: module:callable needs the callable's name after the colon")
    if spec.endswith(".onnx") or path.endswith(".py") or os.path.sep in path:
        if not os.path.isfile(path):
            raise InvalidArgument(f"--model {spec}: no such file {path}")
        origin = path = os.path.abspath(path)
    else:                                   # an importable module: its source file, when it has one
        import importlib.util
        try:
            found = importlib.util.find_spec(path)
        except (ImportError, ValueError) as e:
            raise InvalidArgument(f"--model {spec}: cannot find module {path}: {e}") from None
        if found is None:
            raise InvalidArgument(f"--model {spec}: no module {path} (give module:callable or file.py:callable)")
        origin = found.origin if found.origin and os.path.isfile(found.origin) else None
    digest = None
    if origin:
        with open(origin, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    return (path if fn is None else f"{path}:{fn}"), digest


def model_workload(model, batch=None, dtype=None, requests=None, options=None, inflight=None) -> dict:
    """The workload of a model sweep: {"model": name, "options": {...}} (batch, dtype, requests and inflight
    are its params, so each may be an axis: sweep(space, model_workload("rm1"), {"batch": [1, 64]})).
    model: a built-in name (resnet50, bert, rm1, rm2, rm3), a .onnx file or `module:callable` / `file.py:callable`
    returning (model, example_inputs), loaded on each worker as `vnpu profile` loads it."""
    if isinstance(model, str) and model.endswith(".vnpp"):
        raise InvalidArgument(f"--model {model}: a compiled .vnpp program is fixed to the platform it was compiled "
                              f"for; a sweep compiles per point: give the .onnx file or module:callable")
    if is_imported(model):
        if options:
            raise InvalidArgument(f"model options ({', '.join(options)}) are for the built-in models, not {model}")
        spec, digest = _imported_source(model)
        wl = {"model": spec, "options": {}, "digest": digest}
    else:
        from vnpu.runtime.graph.models import _canonical
        wl = {"model": _canonical(model), "options": dict(options or {})}
    for k, v in (("batch", batch), ("dtype", dtype), ("requests", requests), ("inflight", inflight)):
        if v is not None:
            wl[k] = v
    return wl


def is_model(workload):
    return isinstance(workload, dict) and "model" in workload


def figures_of(workload):
    return MODEL_FIGURES if is_model(workload) else FIGURES


def run_point(config, overrides, op, params, seed=0) -> dict:
    """Build the card, run op `op` once on random inputs, and return the row's figures. Never raises: a
    point that fails is a row with `error` set (a bad config value, an op that does not fit the card...)."""
    t0, c0 = time.perf_counter(), time.process_time()
    warm = _RUN_IN_PROCESS[0] > 0
    _RUN_IN_PROCESS[0] += 1
    row = {k: None for k in figures_of(op)}
    try:
        measure = _measure_model if is_model(op) else _measure
        row.update(measure(config, overrides, op, params, seed))
    except VnpuError as e:
        row["error"] = f"{type(e).__name__}: {e}"
        row["_cache"] = True          # deterministic: the same point fails the same way
    except Exception as e:  # noqa: BLE001 - a bug or a fault is still a row, never a lost sweep
        row["error"] = f"{type(e).__name__}: {e}"
        row["_cache"] = False
    row["wall_s"] = time.perf_counter() - t0
    row["cpu_s"] = time.process_time() - c0     # CPU time of the worker process (all its threads) meanwhile
    row["warm"] = warm
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return row


def _measure(config, overrides, op, params, seed):
    import numpy as np
    from vnpu.emulator.card import Card
    from vnpu.emulator.power import card_area, launch_energy
    from vnpu.emulator.trace import summarize
    from vnpu.kernels.commands import _parse_params, op_dtypes
    from vnpu.kernels.library import all_ops
    ops = all_ops()
    if op not in ops:
        raise InvalidArgument(f"no library op {op!r}; there are {', '.join(sorted(ops))}")
    spec = ops[op]
    p = _parse_params(spec, [f"--{k}={v}" for k, v in params.items()])
    card = Card(config, {k: v for k, v in overrides.items()} or None)
    inputs = spec.make_inputs(np.random.default_rng(seed), p)
    _, result = spec.run(card, inputs, p, None)
    s = summarize(result)
    ops_count = spec.ops_per_call(p) if spec.ops_per_call else 2 * s["macs"]
    mac_dt, lane_dt = op_dtypes(op, p)
    e = launch_energy(result, mac_dtype=mac_dt, vector_dtype=lane_dt)
    b = s["bytes"]
    sec = result.seconds
    row = {"cycles": int(result.cycles), "seconds": sec, "ops": int(ops_count),
           "ops_per_s": ops_count / sec if sec else None, "macs": int(s["macs"]),
           "dram_read_bytes": int(b["dram_read"]), "dram_write_bytes": int(b["dram_write"]),
           "dram_bytes": int(b["dram_read"] + b["dram_write"]), "sram_bytes": int(b["sram_read"] + b["sram_write"]),
           "energy_j": e["total_j"], "power_w": e["average_w"],
           "tops_per_w": ops_count / e["total_j"] / 1e12 if s["macs"] and e["total_j"] else None,
           "area_mm2": card_area(card.config)["total_mm2"], "error": None}
    for unit, u in s["units"].items():
        row[f"util.{unit}"] = u["utilization"]
    return row


_IMPORTED = {}       # (spec, digest, batch) -> (Graph, example inputs): one import/export per worker process


def _imported_graph(spec, digest, batch):
    """The imported model's graph and example inputs, loaded by `vnpu profile`'s loader (runtime/commands.py)
    once per worker process; the graph is never mutated by compile (its passes copy)."""
    key = (spec, digest, batch)
    if key not in _IMPORTED:
        import numpy as np
        from vnpu.runtime.commands import load_model
        from vnpu.runtime.graph.program import _np, to_graph
        model, example = load_model(spec, batch)
        graph = to_graph(model, example, batch if spec.endswith(".onnx") else None)
        _IMPORTED.clear()                   # one model at a time: a sweep has one workload
        _IMPORTED[key] = graph, [np.asarray(_np(x)) for x in example]
    return _IMPORTED[key]


def _measure_model(config, overrides, workload, params, seed):
    """Compile the model onto a platform of `platform.cards` cards (the other keys: card overrides), serve
    `requests` requests with `inflight` of them in flight (default: as many as cards), and measure the virtual
    timeline."""
    import vnpu
    from vnpu.emulator.power import card_area
    from vnpu.runtime.graph import models
    from vnpu.runtime.graph.program import _pct
    p = {**MODEL_PARAMS, **{k: v for k, v in workload.items() if k in MODEL_PARAMS}, **params}
    unknown = sorted(set(p) - set(MODEL_PARAMS))
    if unknown:
        raise InvalidArgument(f"a model sweep's params are {', '.join(MODEL_PARAMS)}, not {', '.join(unknown)}")
    batch, dtype, requests, inflight = p["batch"], p["dtype"], p["requests"], p["inflight"]
    for name, v in (("requests", requests), ("inflight", inflight)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InvalidArgument(f"--{name} must be a positive int, got {v!r}")
    platform_keys = {k[len("platform."):]: v for k, v in overrides.items() if k.startswith("platform.")}
    card_keys = {k: v for k, v in overrides.items() if not k.startswith("platform.")}
    data = {"card": config, **platform_keys, "card_overrides": card_keys}
    platform = vnpu.Platform(data)
    cards = len(platform.devices)
    inflight = inflight or cards
    spec = workload["model"]
    if is_imported(spec):
        if not spec.endswith(".onnx") and batch != 1:
            raise InvalidArgument(f"--batch is for built-in and .onnx models; {spec} returns its own example "
                                  f"inputs (their batch is the row's batch)")
        graph, example = _imported_graph(spec, workload.get("digest"), batch)
        if not spec.endswith(".onnx"):      # the callable's inputs fix the batch: their leading dimension
            batch = int(example[0].shape[0]) if example and getattr(example[0], "ndim", 0) else 1
        reqs = [example] * requests         # as `vnpu serve`: the example inputs, once per request
    else:
        graph = models.build(spec, batch=batch, **workload.get("options", {}))
        example = models.example_inputs(graph, seed=seed)
        reqs = [models.example_inputs(graph, seed=seed + 1 + r) for r in range(requests)]
    prog = vnpu.compile(graph, example, cards=cards, dtype=dtype, strategy="auto", platform=platform, check=False)
    prog.serve(reqs, inflight=inflight, threads=1)      # one host thread: a deterministic timeline
    prof = prog.profile()
    lat = sorted(prof.latencies_ns())
    span_s = prof.makespan_ns / 1e9
    items = requests * batch
    energy = prof.energy_j
    area = card_area(platform.devices[0].config)["total_mm2"]
    return {"cards": cards, "latency_p50_us": _pct(lat, 50) / 1e3, "latency_p90_us": _pct(lat, 90) / 1e3,
            "latency_p99_us": _pct(lat, 99) / 1e3, "items_per_s": items / span_s if span_s else None,
            "makespan_us": prof.makespan_ns / 1e3, "energy_j": energy,
            # the split of the total (docs/power.md 8): the cards' launches and the PCIe copies
            "card_energy_j": getattr(prof, "card_energy_j", None), "pcie_energy_j": getattr(prof, "pcie_energy_j", None),
            "items_per_j": items / energy if energy else None,
            "power_w": energy / span_s if span_s else None,
            "area_mm2": area * cards, "card_area_mm2": area, "strategy": prog.placement.strategy, "error": None,
            "batch": batch, "inflight": inflight}


# ---------------------------------------------------------------------------------------------- the cache
class Cache:
    """One JSON file per point, DIR/ab/abcdef....json, written atomically; None: no cache."""

    def __init__(self, folder):
        self.folder = folder

    def _path(self, key):
        return os.path.join(self.folder, key[:2], key + ".json")

    def get(self, key):
        if not self.folder:
            return None
        try:
            with open(self._path(key)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def put(self, key, row):
        if not self.folder:
            return
        path = self._path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(row, f)
            os.replace(tmp, path)
        except OSError as e:
            raise VnpuError(f"cannot write the sweep cache {self.folder}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------- the engine
class Progress:
    """A tqdm bar on stderr: points done of the total, failed, from cache, and the rate of computed points
    (points/min; cached points are counted in the bar's start, not in the rate). Silent unless enabled and the
    stream is a terminal (a log file or a pipe gets only the command's final summary line), or when tqdm is
    not installed (it is in the sweep extra)."""

    def __init__(self, total, enabled=True, stream=None, cached=0, failed=0):
        self.total, self.stream = total, stream or sys.stderr
        self.done, self.failed, self.cached = cached, failed, cached
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, initial=cached, file=self.stream, unit="pt", desc="sweep", leave=True,
                            dynamic_ncols=True, mininterval=0.5,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} points "
                                       "[{elapsed}<{remaining}{postfix}]")
            self._postfix()

    def rate(self):
        """Computed points per minute so far."""
        dt = time.perf_counter() - self.t0
        return (self.done - self.cached) / dt * 60 if dt > 0 else 0.0

    def _postfix(self):
        self.bar.set_postfix_str(f"{self.failed} failed, {self.cached} cached, {self.rate():.0f} points/min",
                                 refresh=False)

    def update(self, row, cached):
        self.done += 1
        self.failed += row.get("error") is not None
        self.cached += cached
        if self.bar is not None:
            self._postfix()
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self._postfix()
            self.bar.close()
            self.bar = None


def sweep(space=None, workload="add", params=None, *, config=None, samples=None, seed=0, method=None, workers=None,
          scheduler=None, client=None, cache=DEFAULT_CACHE, progress=False, on_row=None):
    """Run a design-space sweep and return a pandas DataFrame, one row per point (in the points' order).

    space: {config_key: [values]} (a grid; `samples` draws that many points of it with `seed`; method="lhs":
    a Latin hypercube of `samples` points, each axis's values as its levels) or a list of override dicts.
    workload: a library op name (`vnpu op list`; params: {param: value or [values]}), or a model workload,
    model_workload("rm1", options={"rows_scale": 1e-4}) or {"model": "rm1", ...} (params: batch, dtype,
    requests, each a value or [values]; space keys `platform.KEY` are platform keys, e.g. platform.cards,
    the others card keys). config: the base card (default "tiny" for an op, "reference" for a model).
    workers: 0 runs serially in this process (no Dask); N starts a LocalCluster of N worker processes;
    scheduler: the address of an existing Dask cluster; client: an existing distributed.Client.
    cache: a folder (None: no cache). on_row(index, row, cached): called as each row arrives.
    progress: True for a tqdm bar on stderr (only when it is a terminal), or a stream to draw it on.
    df.attrs: {"computed": n, "cached": n, "failed": n, "seconds": wall}."""
    pd = need("pandas")
    if isinstance(workload, dict):
        if "model" not in workload:
            raise InvalidArgument("a dict workload must name its model: {\"model\": \"rm1\", ...}")
        if "digest" in workload and is_imported(workload["model"]):
            workload = dict(workload)        # already resolved by model_workload
        else:
            workload = model_workload(workload["model"], workload.get("batch"), workload.get("dtype"),
                                      workload.get("requests"), workload.get("options"), workload.get("inflight"))
        if is_imported(workload["model"]) and not workload["model"].endswith(".onnx") and \
                ("batch" in (params or {}) or "batch" in workload):
            raise InvalidArgument(f"--batch is for built-in and .onnx models; {workload['model']} returns its own "
                                  f"example inputs (their leading dimension is the row's batch)")
    elif not isinstance(workload, str):
        raise InvalidArgument(f"workload must be a library op name or a model workload, got {workload!r}")
    if config is None:
        config = "reference" if is_model(workload) else "tiny"
    if not is_model(workload) and any(str(k).startswith("platform.") for k in (space or {})
                                      if isinstance(space, dict)):
        raise InvalidArgument("platform.* keys need a model workload (--model); an op runs on one card")
    pts = points_of(space, params, samples, seed, method)
    if not pts:
        raise InvalidArgument("the sweep has no points")
    keys = [point_key(config, o, workload, p) for o, p in pts]
    store = Cache(cache)
    rows, computed = {}, 0
    t0 = time.perf_counter()
    prog = None

    def got(i, row, cached):
        rows[i] = row
        if prog is not None:
            prog.update(row, cached)
        if on_row:
            on_row(i, row, cached)

    todo = []
    for i, k in enumerate(keys):
        hit = store.get(k)
        if hit is not None:
            got(i, hit, True)
        else:
            todo.append(i)
    prog = Progress(len(pts), enabled=bool(progress), stream=progress if hasattr(progress, "write") else None,
                    cached=len(rows),
                    failed=sum(r.get("error") is not None for r in rows.values()))
    # one task per distinct point (a point given twice is run once)
    first = {}
    for i in todo:
        first.setdefault(keys[i], i)

    def finish(i, row):
        nonlocal computed
        computed += 1
        if row.pop("_cache", True):
            store.put(keys[i], row)
        for j in todo:
            if keys[j] == keys[i] and j not in rows:
                got(j, dict(row), False)

    try:
        if first and workers == 0 and client is None and scheduler is None:
            for k, i in first.items():
                o, p = pts[i]
                finish(i, run_point(config, o, workload, p))
        elif first:
            _on_dask(first, pts, config, workload, finish, workers, scheduler, client)
    finally:
        prog.close()
    df = pd.DataFrame([_flat(pts[i], config, workload, rows[i], i in todo) | {"key": keys[i]}
                       for i in range(len(pts))])
    for c in INT_FIGURES:
        if c in df.columns:
            df[c] = df[c].astype("Int64")
    df.attrs.update(computed=computed, cached=len(pts) - len(todo), failed=int(df["error"].notna().sum()),
                    seconds=time.perf_counter() - t0)
    return df


def _flat(point, config, workload, row, computed):
    overrides, params = point
    if is_model(workload):
        p = {**MODEL_PARAMS, **{k: v for k, v in workload.items() if k in MODEL_PARAMS}, **params}
        # the batch of a callable's inputs and the inflight count the point ran with, when the row knows them
        p.update({k: row[k] for k in ("batch", "inflight") if row.get(k) is not None})
        out = {"config": config, **overrides, "model": workload["model"], **p,
               **{f"option.{k}": v for k, v in workload.get("options", {}).items()}}
    else:
        out = {"config": config, **overrides, "op": workload, **{f"param.{k}": v for k, v in params.items()}}
    out.update({k: row.get(k) for k in figures_of(workload)})
    out.update(wall_s=row.get("wall_s"), cpu_s=row.get("cpu_s"), warm=row.get("warm"), worker=row.get("worker"),
               cached=not computed)
    return out


def _on_dask(first, pts, config, workload, finish, workers, scheduler, client):
    distributed = need("distributed")
    own = None
    if client is None:
        if scheduler:
            client = own = distributed.Client(scheduler)
        else:
            n = workers or os.cpu_count() or 1
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=":0")     # a free port: no clash with 8787
            client = own = distributed.Client(cluster)
    try:
        futures = {}
        for k, i in first.items():
            o, p = pts[i]
            f = client.submit(run_point, config, o, workload, p, key=f"vnpu-point-{k}", pure=False, retries=2)
            futures[f] = i
        for f in distributed.as_completed(futures):
            i = futures[f]
            try:
                row = f.result()
            except Exception as e:  # noqa: BLE001 - e.g. KilledWorker after too many worker deaths
                row = {k: None for k in figures_of(workload)}
                row.update(error=f"{type(e).__name__}: {e}", _cache=False)
            finish(i, row)
    finally:
        if own is not None:
            cluster = getattr(own, "cluster", None)
            own.close()
            if cluster is not None and not scheduler:
                cluster.close()


def write_results(df, out):
    """FILE.parquet: FILE.parquet and FILE.csv; FILE.csv: the CSV only. Returns the paths written."""
    base, ext = os.path.splitext(out)
    if ext not in (".parquet", ".csv"):
        raise InvalidArgument(f"--out {out}: give a .parquet or .csv file")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InvalidArgument(f"--out {out}: no folder {folder}")
    written = []
    if ext == ".parquet":
        need("pyarrow")
        df.to_parquet(out, index=False)
        written.append(out)
    df.to_csv(base + ".csv", index=False)
    written.append(base + ".csv")
    return written


def read_results(path):
    pd = need("pandas")
    if not os.path.exists(path):
        raise InvalidArgument(f"no results file {path}")
    try:
        if path.endswith(".parquet"):
            need("pyarrow")
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError) as e:
        raise InvalidArgument(f"cannot read results {path}: {e}") from None


# ---------------------------------------------------------------------------------------------- the command
def cmd_sweep(args):
    from vnpu.cli import card_config
    if args.workers is not None and args.workers < 0:
        raise InvalidArgument(f"--workers must be >= 0, got {args.workers}")
    config = card_config(args.config) if args.config is not None else None
    space = parse_axes(args.set)
    if (args.op is None) == (args.model is None):
        raise InvalidArgument("give the workload: --op NAME (a library op) or --model NAME|FILE (a built-in model, "
                              "a .onnx file or module:callable)")
    if args.model is not None:
        if args.param:
            raise InvalidArgument("--param is for --op; a model takes --model-option KEY=V, --batch, --dtype, "
                                  "--requests, --inflight")
        options = {}
        for item in args.model_option:
            k, sep, v = item.partition("=")
            if not sep or not k.strip() or not v.strip():
                raise InvalidArgument(f"--model-option {item!r} must look like KEY=VALUE, e.g. image=64")
            options[k.strip()] = _value(v)
        workload = model_workload(args.model, options=options)
        params = {}
        for key in MODEL_PARAMS:
            if getattr(args, key) is not None:
                params.update(parse_axes([f"{key}={getattr(args, key)}"], f"--{key}"))
    else:
        for flag in ("model_option", "batch", "dtype", "requests", "inflight"):
            if getattr(args, flag) not in (None, []):
                raise InvalidArgument(f"--{flag.replace('_', '-')} is for --model; an op takes --param KEY=V")
        workload = args.op
        params = parse_axes(args.param, "--param")
    if args.samples is not None and args.lhs is not None:
        raise InvalidArgument("give --samples N or --lhs N, not both")
    samples, method = (args.lhs, "lhs") if args.lhs is not None else (args.samples, None)
    df = sweep(space, workload, params, config=config, samples=samples, method=method, seed=args.seed,
               workers=args.workers,
               scheduler=args.scheduler, cache=None if args.no_cache else args.cache, progress=not args.quiet)
    a = df.attrs
    written = write_results(df, args.out) if args.out else []
    rate = a["computed"] / a["seconds"] * 60 if a["seconds"] and a["computed"] else 0.0
    summary = {"points": len(df), "computed": a["computed"], "cached": a["cached"], "failed": a["failed"],
               "seconds": a["seconds"], "points_per_min": rate, "written": written}
    if args.json:
        print(json.dumps(summary))
        return 0
    if not written:
        show = [c for c in df.columns if c not in RUN_COLUMNS and not c.startswith("util.") and c != "config"]
        print(df[show].to_string(index=False, max_rows=60))
    print(f"{len(df)} points: {a['computed']} computed ({rate:.0f} points/min), {a['cached']} from cache, "
          f"{a['failed']} failed; {a['seconds']:.1f} s" + (f"; wrote {', '.join(written)}" if written else ""))
    return 0


@extra_command
def _register(sub):
    s = sub.add_parser("sweep", help="design-space sweep of a library op or a model over card and platform configs, "
                                     "on Dask")
    s.add_argument("--op", default=None, help="library op to run at each point (vnpu op list)")
    s.add_argument("--model", default=None, metavar="NAME|FILE",
                   help="model to compile and serve at each point: a built-in one (resnet50, bert, rm1, rm2, rm3), a "
                        ".onnx file, or module:callable / file.py:callable returning (model, example_inputs), as "
                        "vnpu profile takes it")
    s.add_argument("--model-option", action="append", default=[], metavar="KEY=V",
                   help="a model option, e.g. image=64 (resnet50), rows_scale=1e-4 (rm1)")
    s.add_argument("--batch", default=None, metavar="B[,B...]", help="the model's batch (default 1); several sweep it")
    s.add_argument("--dtype", default=None, metavar="D[,D...]",
                   help="fp32 (default), fp16 or int8; several sweep it")
    s.add_argument("--requests", default=None, metavar="R[,R...]",
                   help="requests served per point (default 8); several sweep it")
    s.add_argument("--inflight", default=None, metavar="I[,I...]",
                   help="requests in flight (closed loop, as vnpu serve; default: as many as cards); several sweep it")
    s.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2",
                   help="op parameter (as vnpu op --KEY); several values sweep it")
    s.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                   help="card config key and its values, e.g. matrix.rows=16,32 (the grid is every combination); "
                        "with --model also platform keys, e.g. platform.cards=1,2,6")
    s.add_argument("--config", default=None,
                   help="base card config: tiny, reference or a YAML file (default tiny for --op, reference for --model)")
    s.add_argument("--samples", type=int, default=None, help="a random sample of N points of the grid")
    s.add_argument("--lhs", type=int, default=None, metavar="N",
                   help="a Latin-hypercube sample of N points: each --set axis's values are its levels, each level "
                        "used as evenly as possible, shuffled per axis with --seed")
    s.add_argument("--seed", type=int, default=0, help="seed of --samples and --lhs (default 0)")
    s.add_argument("--workers", type=int, default=None,
                   help="worker processes of the local Dask cluster (default: one per core; 0: serial, no Dask)")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="an existing Dask scheduler, e.g. tcp://10.0.0.1:8786")
    s.add_argument("--cache", default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    s.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    s.add_argument("--out", "-o", default=None, help="FILE.parquet (also writes FILE.csv) or FILE.csv")
    s.add_argument("--json", action="store_true", help="a JSON summary instead of the table")
    s.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    s.set_defaults(func=cmd_sweep)
