"""`@vnpu.kernel`: a Python function becomes a card kernel.

The function's source is parsed once and two statements are rewritten so the compiler sees them (the
approach of Triton's front end, kept to what tracing cannot do): `if test:` becomes a call that either
keeps Python's meaning (a Python test) or compiles a branch (a test on card values), and
`for i in range(...)` becomes a loop on the card. Everything else is ordinary Python, run once while
compiling (with symbolic values: kernels/lang/lowering.py) or once per PE while interpreting (numpy values:
kernels/lang/interpreter.py).
"""
from __future__ import annotations

import ast
import functools
import inspect
import json
import textwrap
import threading

import numpy as np

from vnpu.errors import InvalidArgument

from . import api
from .compiler import DTYPES, Compiler, LocalMemoryFull, PipelineHazard, RegisterPressure, Scalar
from .errors import KernelError
from .interpreter import ITensor, PE, Shared
from .lowering import F32Arg, Lowering, Tensor

_CARDS = {}
_CARDS_LOCK = threading.Lock()


class Shared_:
    """Host-side marker: pass `vnpu.shared(array)` to place a tensor argument in the card's shared SRAM."""

    def __init__(self, array):
        self.array = np.asarray(array)


def shared(array):
    return Shared_(array)


# --- the front end's rewrite --------------------------------------------------------------------------
def _in_order(node, out):
    """(name, is_store) of every name in node, in evaluation order (an assignment's value before its targets)."""
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        if node.value is not None:
            _in_order(node.value, out)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            if isinstance(node, ast.AugAssign) and isinstance(t, ast.Name):
                out.append((t.id, False))
            _in_order(t, out)
        return
    if isinstance(node, ast.Name):
        out.append((node.id, isinstance(node.ctx, ast.Store)))
        return
    for child in ast.iter_child_nodes(node):
        _in_order(child, out)


def _stored(stmts):
    return {n.id for s in stmts for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


class Rewriter(ast.NodeTransformer):
    """`if` -> __vnpu_if__(test, jumps, names) and then()/orelse()/end(); `range` in a for -> __vnpu_range__.
    names: the variables the compiler must check are not rebound to card values inside the construct (a loop's
    variables read before they are assigned in its body; an if's variables assigned inside and read after it)."""

    def __init__(self, func):
        self.n, self.func = 0, func

    def visit_If(self, node):
        self.generic_visit(node)
        self.n += 1
        h = f"__vnpu_if{self.n}"
        jumps = any(isinstance(x, (ast.Return, ast.Break, ast.Continue)) for s in node.body + node.orelse
                    for x in ast.walk(s))
        later = {n.id for n in ast.walk(self.func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                 and n.lineno > (node.end_lineno or node.lineno)}
        names = sorted(_stored(node.body + node.orelse) & later)
        call = ast.Call(ast.Name("__vnpu_if__", ast.Load()),
                        [node.test, ast.Constant(jumps), ast.Constant(tuple(names))], [])
        out = [ast.Assign([ast.Name(h, ast.Store())], call),
               ast.If(ast.Call(ast.Attribute(ast.Name(h, ast.Load()), "then", ast.Load()), [], []), node.body, [])]
        if node.orelse:
            out.append(ast.If(ast.Call(ast.Attribute(ast.Name(h, ast.Load()), "orelse", ast.Load()), [], []),
                              node.orelse, []))
        out.append(ast.Expr(ast.Call(ast.Attribute(ast.Name(h, ast.Load()), "end", ast.Load()), [], [])))
        for s in out:
            ast.copy_location(s, node)
            ast.fix_missing_locations(s)
        return out

    def visit_For(self, node):
        self.generic_visit(node)
        it = node.iter
        if isinstance(it, ast.Call) and ((isinstance(it.func, ast.Name) and it.func.id == "range") or
                                         (isinstance(it.func, ast.Attribute) and it.func.attr == "range")):
            if isinstance(it.func, ast.Name):
                it.func = ast.copy_location(ast.Name("__vnpu_range__", ast.Load()), it.func)
            events = []
            for s in node.body:
                _in_order(s, events)
            first = {}
            for name, store in events:
                first.setdefault(name, store)
            carried = sorted(n for n in _stored(node.body) if first.get(n) is False)
            it.keywords.append(ast.keyword("_names", ast.Constant(tuple(carried))))
            ast.fix_missing_locations(it)
        return node


def rewrite(fn):
    """The kernel function with `if` and `range` loops rewritten (same file and line numbers)."""
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        raise KernelError(f"@vnpu.kernel needs the source of {fn.__name__} (define kernels in a file, not "
                          f"in an interactive prompt)", line=None) from None
    tree = ast.parse(src)
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef):
        raise KernelError(f"@vnpu.kernel decorates a function, got {type(fdef).__name__}", line=None)
    fdef.decorator_list = []
    Rewriter(fdef).visit(fdef)
    ast.increment_lineno(tree, fn.__code__.co_firstlineno - 1)
    free = fn.__code__.co_freevars
    outer = ast.FunctionDef(name="__vnpu_make__", args=ast.arguments(
        posonlyargs=[], args=[ast.arg(n) for n in free], kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=[fdef, ast.Return(ast.Name(fdef.name, ast.Load()))], decorator_list=[], returns=None,
        type_params=[])
    ast.copy_location(outer, fdef)
    mod = ast.Module([outer], type_ignores=[])
    ast.fix_missing_locations(mod)
    code = compile(mod, fn.__code__.co_filename, "exec")
    ns = fn.__globals__
    ns.setdefault("__vnpu_if__", api._if)
    ns.setdefault("__vnpu_range__", api._range)
    scope = {}
    exec(code, ns, scope)
    cells = [c.cell_contents for c in (fn.__closure__ or ())]
    new = scope["__vnpu_make__"](*cells)
    new.__defaults__ = fn.__defaults__
    return new


# --- compiled kernels and their runs ---------------------------------------------------------------------
class Compiled:
    """A compiled kernel: its assembly text (source lines as comments, `; pc N` on every instruction), module
    image, and what the host passes and reads back."""
    pc_lines = ()

    def source_line(self, pc):
        """(file, line, text) of the kernel source that made the instruction at pc (trace events carry pcs)."""
        return self.pc_lines[pc] if 0 <= pc < len(self.pc_lines) else None

    def __init__(self, name, text, image, params, outputs, written, returns):
        self.name, self.text, self.image = name, text, image
        self.params = params          # per kernel parameter: ("tensor", name) | ("int",) | ("float",) | ("const",)
        self.outputs = outputs        # [(name, shape, dtype)] tensors the kernel creates (vnpu.output)
        self.written = written        # names of tensor arguments the kernel stores into
        self.returns = returns        # names of what the kernel returns (None: nothing)


class Profile:
    """What a kernel run cost: cycles, unit utilization, bytes per memory level, the roofline point, trace."""

    def __init__(self, result):
        self.result = result
        self.summary = result.summary()
        self.cycles = self.summary["cycles"]
        self.time_us = self.summary["time_us"]
        self.utilization = {k: v["utilization"] for k, v in self.summary["units"].items()}
        self.bytes = self.summary["bytes"]
        self.roofline = self.summary["roofline"]

    @property
    def trace(self):
        """The launch as a Chrome/Perfetto trace (a dict; write_trace saves it)."""
        return self.result.chrome_trace()

    def write_trace(self, path):
        with open(path, "w") as f:
            json.dump({"traceEvents": self.trace["traceEvents"]} if "traceEvents" in self.trace else self.trace, f)
        return path

    def __str__(self):
        from vnpu.emulator.trace import format_summary
        return format_summary(self.summary)

    def __repr__(self):
        return f"Profile({self.summary['kernel']}: {self.cycles} cycles)"


def _card(config):
    from vnpu.emulator.card import Card
    from vnpu.emulator.config import CardConfig
    if isinstance(config, CardConfig):
        return Card(config)
    key = config or "tiny"
    with _CARDS_LOCK:
        if key not in _CARDS:
            _CARDS[key] = Card(key)
        return _CARDS[key]


def _pes(pes, card):
    if pes is None:
        return tuple(range(card.config.pes))
    if isinstance(pes, (int, np.integer)) and not isinstance(pes, bool):
        if not 1 <= pes <= card.config.pes:
            raise InvalidArgument(f"pes={pes}: the card has {card.config.pes} PEs")
        return tuple(range(int(pes)))
    try:
        ids = tuple(int(p) for p in pes)
    except (TypeError, ValueError):
        raise InvalidArgument(f"pes must be a number of PEs or a sequence of PE ids, got {pes!r}") from None
    if not ids or len(set(ids)) != len(ids) or not all(0 <= p < card.config.pes for p in ids):
        raise InvalidArgument(f"pes={pes!r}: distinct PE ids in [0, {card.config.pes})")
    return ids


class Kernel:
    """A kernel written in the kernel language. Call it on numpy arrays to run it on a card; see
    docs/kernel-language.md."""

    def __init__(self, fn, name=None):
        self.fn = fn
        self.name = name or fn.__name__
        self._traced = None
        self._cache = {}
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    @property
    def stored(self):
        """Parameters the source passes to store / transfer / embedding_bag as their destination (what a run
        returns when the kernel returns nothing, also when the store sits in a loop that ran no iteration)."""
        if getattr(self, "_stored", None) is None:
            try:
                tree = ast.parse(textwrap.dedent(inspect.getsource(self.fn)))
            except (OSError, TypeError, SyntaxError):
                tree = None
            found = set()
            for node in ast.walk(tree) if tree is not None else ():
                if isinstance(node, ast.Call):
                    name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                    pos = {"store": 0, "transfer": 0, "embedding_bag": 3}.get(name)
                    if pos is not None and len(node.args) > pos:
                        target = node.args[pos]
                        while isinstance(target, (ast.Subscript, ast.Attribute, ast.Call)):
                            target = target.value if not isinstance(target, ast.Call) else target.func
                        if isinstance(target, ast.Name):
                            found.add(target.id)
            self._stored = found
        return self._stored

    @property
    def def_line(self):
        """(file, line, text) of the kernel's `def` (where argument errors point)."""
        import linecache
        code = self.fn.__code__
        line = code.co_firstlineno
        text = linecache.getline(code.co_filename, line).strip()
        while text.startswith("@"):
            line += 1
            text = linecache.getline(code.co_filename, line).strip()
        return code.co_filename, line, text

    @property
    def traced_fn(self):
        if self._traced is None:
            self._traced = rewrite(self.fn)
        return self._traced

    def _signature(self, args):
        try:
            params = list(inspect.signature(self.fn, eval_str=True).parameters.values())
        except Exception:       # noqa: BLE001 (an annotation naming something else: not ours)
            params = list(inspect.signature(self.fn).parameters.values())

        def bad(message):
            return KernelError(f"kernel {self.name}: {message}", line=self.def_line)
        if len(args) != len(params):
            raise bad(f"takes {len(params)} arguments ({', '.join(p.name for p in params)}), got {len(args)}")
        spec = []
        for p, a in zip(params, args):
            if p.annotation is api.constexpr or p.annotation == "vnpu.constexpr" or p.annotation == "constexpr" \
                    or a is None:          # None: an absent optional argument, known while compiling
                spec.append((p.name, "const", a))
            elif isinstance(a, (np.ndarray, Shared_)):
                arr = a.array if isinstance(a, Shared_) else a
                if arr.dtype not in DTYPES:
                    raise bad(f"argument {p.name} has dtype {arr.dtype}; tensors are float32, float16, int8, int32 "
                              f"or int64")
                if arr.ndim == 0:
                    raise bad(f"argument {p.name} is a 0-d array; pass a number (a scalar argument) or an array "
                              f"with at least one dimension")
                shape = arr.shape
                if p.annotation is api.anysize or p.annotation in ("vnpu.anysize", "anysize"):
                    shape = (None,) + arr.shape[1:]
                spec.append((p.name, "tensor", (shape, DTYPES[arr.dtype], isinstance(a, Shared_))))
            elif isinstance(a, (bool, np.bool_)):
                raise bad(f"argument {p.name} is a bool; pass an int")
            elif isinstance(a, (int, np.integer)):
                spec.append((p.name, "int", None))
            elif isinstance(a, (float, np.floating)):
                spec.append((p.name, "float", None))
            else:
                raise bad(f"argument {p.name} must be a numpy array, an int or a float, got {type(a).__name__}")
        return tuple(spec)

    # --- compiling ---------------------------------------------------------------------------------------
    def compile(self, *args, config=None) -> Compiled:
        """The kernel compiled for these arguments' shapes and dtypes on this card configuration (cached)."""
        card_config = _card(config).config if not hasattr(config, "local_memory") else config
        spec = self._signature(args)
        ckey = (card_config.data["name"], card_config.local_memory.bytes, card_config.dma.engines_per_pe,
                card_config.semaphores)
        key = (tuple((n, k, v if k != "const" else repr(v)) for n, k, v in spec), ckey)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._compile(spec, card_config)
            return self._cache[key]

    def _compile(self, spec, config):
        """Compile; when values reused across the kernel keep too many registers live, again without reuse;
        when tiles live at once do not fit local memory, again waiting for each store at once."""
        reuse, eager, in_order = True, False, set()
        while True:
            try:
                return self._compile_once(spec, config, reuse, eager, in_order)
            except PipelineHazard as e:
                if e.tensors <= in_order:
                    raise
                in_order |= e.tensors
            except RegisterPressure:
                if not reuse:
                    raise
                reuse = False
            except LocalMemoryFull:
                if eager:
                    raise
                eager = True

    def _compile_once(self, spec, config, reuse, eager=False, in_order=()):
        from vnpu.isa.asm import assemble
        fn = self.traced_fn
        cc = Compiler(self.name, config, fn.__code__.co_filename, reuse, eager, in_order)
        cc.def_line = self.def_line
        low = Lowering(cc)
        call, params = [], []
        for name, kind, v in spec:
            if kind == "const":
                call.append(v)
                params.append(("const",))
                continue
            reg = cc.arg_reg(name, "buffer" if kind == "tensor" else "scalar",
                             {"tensor": v[1] if kind == "tensor" else None, "int": "i64", "float": "f32"}[kind],
                             line=self.def_line)
            if kind == "tensor":
                call.append(Tensor(cc, name, reg, v[0], v[1]))
                params.append(("tensor", name))
            elif kind == "int":
                call.append(Scalar(cc, {reg: 1}))
                params.append(("int",))
            else:
                call.append(F32Arg(cc, name, reg))
                params.append(("float",))
        with api.running(low):
            ret = fn(*call)
            cc.drain()
        returns = None
        if ret is not None:
            rets = ret if isinstance(ret, tuple) else (ret,)
            if not all(isinstance(r, Tensor) for r in rets):
                raise KernelError("a kernel returns tensors (vnpu.output(...) or its arguments), or nothing",
                                  line=None)
            returns = [r.name for r in rets] if isinstance(ret, tuple) else rets[0].name
        code = cc.finish([a[3] for a in cc.args])
        text = cc.text(code, cc.args)
        image = assemble(text, source=f"kernel {self.name}")
        outputs = [(t.name, t.shape, t.dtype) for t in cc.outputs]
        written = [n for n, kind, _ in spec if kind == "tensor" and (n in cc.written or n in self.stored)]
        comp = Compiled(self.name, text, image, params, outputs, written, returns)
        comp.pc_lines = cc.pc_lines
        return comp

    def asm(self, *args, config=None) -> str:
        """The assembly the kernel compiles to for these arguments, with the source lines as comments."""
        return self.compile(*args, config=config).text

    # --- running on a card -----------------------------------------------------------------------------
    def __call__(self, *args, pes=None, config=None, card=None, engine="numba", sanitize=True, trace=True):
        """Run on a card (default: a cached card of `config`, 'tiny' unless given). Returns (outputs, Profile);
        outputs are what the kernel returns, else the tensor arguments it wrote (also updated in place)."""
        card = card if card is not None else _card(config)
        pe_ids = _pes(pes, card)
        comp = self.compile(*args, config=card.config)
        owned, values, by_name = [], [], {}
        try:
            for a, p in zip(args, comp.params):
                if p[0] == "tensor":
                    arr = a.array if isinstance(a, Shared_) else a
                    raw = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
                    addr = card.alloc(max(1, raw.nbytes), memory="shared" if isinstance(a, Shared_) else "dram")
                    owned.append(addr)
                    if raw.nbytes:
                        card.write(addr, raw)
                    values.append(addr)
                    by_name[p[1]] = (addr, arr)
                elif p[0] == "int":
                    values.append(int(a))
                elif p[0] == "float":
                    values.append(float(a))
            for name, shape, dtype in comp.outputs:
                arr = np.zeros(shape, np.dtype(_np(dtype)))
                addr = card.alloc(max(1, arr.nbytes))
                owned.append(addr)
                values.append(addr)
                by_name[name] = (addr, arr)
            result = card.launch(comp.image, comp.name, values, pes=pe_ids, engine=engine,
                                 sanitize=sanitize, trace=trace)
            for name in set(comp.written) | {n for n, _, _ in comp.outputs}:
                addr, arr = by_name[name]
                if arr.nbytes:
                    arr[...] = card.read(addr, arr.nbytes).view(arr.dtype).reshape(arr.shape)
        finally:
            for addr in owned:
                card.free(addr)
        return self._outputs(comp, {n: v[1] for n, v in by_name.items()}), Profile(result)

    @staticmethod
    def _outputs(comp, arrays):
        if comp.returns is None:
            got = [arrays[n] for n in comp.written]
            return got[0] if len(got) == 1 else tuple(got)
        if isinstance(comp.returns, list):
            return tuple(arrays[n] for n in comp.returns)
        return arrays[comp.returns]

    # --- interpreting ------------------------------------------------------------------------------------
    def interpret(self, *args, pes=None, config=None):
        """Run the kernel's Python code once per PE with numpy values (no card, no timing), with the checks
        of kernels/lang/interpreter.py. Returns what a card run returns (without the profile)."""
        card_config = _card(config).config if not hasattr(config, "local_memory") else config
        spec = self._signature(args)
        if pes is None:
            npe = card_config.pes
        elif isinstance(pes, (tuple, list)):
            npe = len(pes)
        elif isinstance(pes, (int, np.integer)) and not isinstance(pes, bool):
            npe = int(pes)
        else:
            raise InvalidArgument(f"pes must be a number of PEs or a sequence of PE ids, got {pes!r}")
        if not 1 <= npe <= card_config.pes:
            raise InvalidArgument(f"pes: the card has {card_config.pes} PEs, asked for {npe}")
        fn = self.traced_fn
        tensors, call = {}, []
        for a, (name, kind, v) in zip(args, spec):
            if kind == "tensor":
                arr = a.array if isinstance(a, Shared_) else a
                tensors[name] = ITensor(name, arr, v[1])
                call.append(tensors[name])
            elif kind == "float":
                call.append(np.float32(a))
            else:
                call.append(a)
        sh = Shared(npe, tensors)
        sh.outputs = []
        errors, rets = [None] * npe, [None] * npe

        def run(p):
            try:
                with api.running(PE(sh, p, int(card_config.local_memory.bytes), sh.outputs)):
                    rets[p] = fn(*call)
            except BaseException as e:       # noqa: BLE001 (reported below, first PE's first)
                errors[p] = e
                sh.barrier.abort()
            finally:
                sh.barrier.leave()           # a PE that has left can reach no later barrier: nobody waits
        threads = [threading.Thread(target=run, args=(p,)) for p in range(npe)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in errors:
            if e is not None and not isinstance(e, KernelError):
                raise e
        for e in errors:
            if e is not None:
                raise e
        ret = rets[0]
        if ret is None:
            ran = {t.name for t in tensors.values() if sh.writer[t.name].max(initial=-1) >= 0}
            got = [tensors[n].array for n, kind, _ in spec if kind == "tensor" and (n in ran or n in self.stored)]
            return got[0] if len(got) == 1 else tuple(got)
        if isinstance(ret, tuple):
            return tuple(r.array for r in ret)
        return ret.array


def _np(dtype):
    from .compiler import NUMPY
    return NUMPY[dtype]


_LIBRARY = {}
_LIBRARY_LOCK = threading.Lock()


def library_kernel(fn, name):
    """The one Kernel object of `fn` under `name` (library modules compile a function under several names,
    one per op; its compiled forms are cached per shape on that object)."""
    with _LIBRARY_LOCK:
        k = _LIBRARY.get((fn, name))
        if k is None:
            k = _LIBRARY[(fn, name)] = Kernel(fn, name=name)
        return k


def kernel(fn=None, *, name=None):
    """Decorator: `@vnpu.kernel` or `@vnpu.kernel(name="...")`."""
    if fn is None:
        return lambda f: Kernel(f, name)
    return Kernel(fn, name)


__all__ = ["kernel", "Kernel", "Profile", "shared", "Compiled", "library_kernel"]
