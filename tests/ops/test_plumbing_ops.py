"""Tensor plumbing (kernels/plumbing.py) against PyTorch: permute / transpose, reshape / view, narrow / slice, cat,
split, pad, to, where, gather, index_select. Random shapes with sizes 1 and primes, every dtype the ops take,
NaN / -0.0 / inf kept bit for bit by the data-movement ops, empty inputs. Each kernel also runs on the reference
engine and in the kernel language's interpreter (tiny shapes, and tiles forced small so the multi-block and
tail paths run there too), which must give the Numba core's bits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vnpu
from vnpu.emulator.card import Card
from vnpu.kernels import plumbing as PL
from engine_modes import on_every_engine as every_engine  # tests/ops/engine_modes.py

CARD = Card("tiny")
SIZES = (1, 2, 3, 5, 7, 11, 13)
DTYPES = (np.float32, np.float16, np.int8, np.int32)
MOVE_DTYPES = DTYPES + (np.float64, np.int64, np.bool_, np.uint8)      # data movement takes any plain dtype


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def data(rng, shape, dtype):
    """Random values of dtype; floats with NaN, +-inf and -0.0 sprinkled in."""
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64).astype(dt)
    x = (rng.standard_normal(shape) * 100).astype(dt)
    flat = x.reshape(-1)
    k = flat.size // 5
    if k:
        flat[rng.integers(0, flat.size, k)] = rng.choice(np.array([np.nan, np.inf, -np.inf, -0.0], dt), k)
    return x


def same_bits(out, ref):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, ref.shape, out.dtype, ref.dtype)
    assert out.tobytes() == ref.tobytes()


def rand_shape(rng, rank):
    return tuple(int(v) for v in rng.choice(SIZES, rank))


# --- every engine: the Numba core, the reference engine, the interpreter -----------------------------------------
def on_every_engine(monkeypatch, call):
    """call() -> (array, result): the same bytes on the Numba core, the reference engine and the interpreter."""
    return every_engine(monkeypatch, call, exact_bytes=True)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 256 bytes: a few elements per block, so blocks have tails and partial rows."""
    monkeypatch.setattr(PL, "_tile_bytes", lambda card, tiles=6, cap=0: 256)
    monkeypatch.setattr(PL, "FILL_MAX", 64)


# --- permute / transpose --------------------------------------------------------------------------------------------
def test_permute_matches_pytorch():
    rng = np.random.default_rng(1)
    for case in range(48):
        rank = 1 + case % 4
        dt = MOVE_DTYPES[case % len(MOVE_DTYPES)]
        x = data(rng, rand_shape(rng, rank), dt)
        dims = tuple(int(d) for d in rng.permutation(rank))
        same_bits(vnpu.ops.permute(x, dims, card=CARD), t(x).permute(dims).contiguous().numpy())
    big = [((300, 200), (1, 0), np.float32), ((3, 1000), (1, 0), np.float16), ((1000, 3), (1, 0), np.int8),
           ((2, 37, 5, 64), (0, 2, 1, 3), np.float32), ((4, 3, 2, 700), (2, 0, 1, 3), np.int32),   # rows of units
           ((2, 3, 20000), (1, 0, 2), np.float32), ((5, 1, 1, 7), (3, 2, 1, 0), np.int32),          # long units
           ((2, 3, 4, 5, 6), (4, 0, 3, 1, 2), np.float16)]
    for shape, dims, dt in big:
        x = data(rng, shape, dt)
        same_bits(vnpu.ops.permute(x, dims, card=CARD), t(x).permute(dims).contiguous().numpy())


def test_transpose_matches_pytorch():
    rng = np.random.default_rng(2)
    for shape, d0, d1 in [((7, 13), 0, 1), ((3, 5, 7), -1, 0), ((2, 3, 5, 7), 1, 2), ((2, 3, 5, 7), 3, 3),
                          ((11,), 0, -1)]:
        x = data(rng, shape, np.float32)
        same_bits(vnpu.ops.transpose(x, d0, d1, card=CARD), t(x).transpose(d0, d1).contiguous().numpy())
    x = data(rng, (33, 7), np.float32)                  # the 2-D default: x.T, as before
    same_bits(vnpu.ops.transpose(x, card=CARD), t(x).T.contiguous().numpy())


def test_permute_on_every_engine(monkeypatch, small_tiles):
    rng = np.random.default_rng(3)
    for shape, dims, dt in [((10, 7), (1, 0), np.float32), ((3, 10, 7), (2, 1, 0), np.float16),
                            ((5, 6, 11), (0, 2, 1), np.int8), ((2, 3, 4, 5), (3, 1, 2, 0), np.int32),
                            ((3, 2, 70), (1, 0, 2), np.float32), ((2, 3, 130), (1, 0, 2), np.int8),
                            ((30, 23), (1, 0), np.int8)]:                 # 16 x 16 blocks: a tail of 14 columns
        x = data(rng, shape, dt)
        out = on_every_engine(monkeypatch, lambda: PL.permute(CARD, x, dims))
        same_bits(out, t(x).permute(dims).contiguous().numpy())


def test_reshape_and_view_are_host_side():
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    with vnpu.ops.profile() as prof:
        r = vnpu.ops.reshape(x, (-1, 5))
        v = vnpu.ops.view(x, 2, 30)
    assert not prof                                     # no launch
    assert np.shares_memory(r, x) and np.shares_memory(v, x)
    same_bits(r, t(x).reshape(-1, 5).numpy())
    same_bits(v, t(x).view(2, 30).numpy())
    xt = x.transpose(2, 0, 1)
    same_bits(vnpu.ops.reshape(xt, (5, 12)), t(x).permute(2, 0, 1).reshape(5, 12).numpy())
    with pytest.raises(vnpu.InvalidArgument, match="contiguous"):
        vnpu.ops.view(xt, 60)
    with pytest.raises(vnpu.InvalidArgument):
        vnpu.ops.reshape(x, (7, -1))


# --- narrow / slice, cat, split -------------------------------------------------------------------------------------
def test_narrow_and_slice_match_pytorch():
    rng = np.random.default_rng(4)
    for case in range(24):
        rank = 1 + case % 4
        x = data(rng, rand_shape(rng, rank), MOVE_DTYPES[case % len(MOVE_DTYPES)])
        d = int(rng.integers(-rank, rank))
        D = x.shape[d]
        start = int(rng.integers(0, D + 1))
        length = int(rng.integers(0, D - start + 1))
        same_bits(vnpu.ops.narrow(x, d, start, length, card=CARD), t(x).narrow(d, start, length).numpy())
        a, b = int(rng.integers(-D - 2, D + 2)), int(rng.integers(-D - 2, D + 2))
        sl = [slice(None)] * rank
        sl[d] = slice(a, b)
        same_bits(vnpu.ops.slice_(x, d, a, b, card=CARD), t(x)[tuple(sl)].contiguous().numpy())
    x = data(rng, (3, 4000), np.float32)                 # long rows: DRAM-to-DRAM transfers
    same_bits(vnpu.ops.narrow(x, 1, 7, 3001, card=CARD), t(x).narrow(1, 7, 3001).numpy())
    same_bits(vnpu.ops.narrow(x, 0, -2, 2, card=CARD), t(x).narrow(0, -2, 2).numpy())


def test_cat_matches_pytorch():
    rng = np.random.default_rng(5)
    for case in range(20):
        rank = 1 + case % 4
        dt = MOVE_DTYPES[case % len(MOVE_DTYPES)]
        shape = rand_shape(rng, rank)
        d = int(rng.integers(-rank, rank))
        xs = []
        for _ in range(int(rng.integers(1, 5))):
            s = list(shape)
            s[d] = int(rng.choice((0, 1, 2, 5)))
            xs.append(data(rng, tuple(s), dt))
        same_bits(vnpu.ops.cat(xs, d, card=CARD), torch.cat([t(x) for x in xs], d).numpy())
    xs = [data(rng, (2, int(rng.integers(1, 4)), 3), np.float32) for _ in range(30)]   # more than one launch
    same_bits(vnpu.ops.cat(xs, 1, card=CARD), torch.cat([t(x) for x in xs], 1).numpy())
    xs = [data(rng, (3, 5), np.int8), np.zeros((0,), np.int8), data(rng, (2, 5), np.int8)]   # legacy empty
    same_bits(vnpu.ops.cat(xs, card=CARD), torch.cat([t(x) for x in xs]).numpy())
    y, z = data(rng, (33, 7), np.float32), data(rng, (33, 5), np.float32)
    same_bits(vnpu.ops.concat([y, z], card=CARD), torch.cat([t(y), t(z)], -1).numpy())   # numpy's default axis


def test_split_matches_pytorch():
    rng = np.random.default_rng(6)
    for case in range(12):
        rank = 1 + case % 4
        x = data(rng, rand_shape(rng, rank), MOVE_DTYPES[case % len(MOVE_DTYPES)])
        d = int(rng.integers(-rank, rank))
        D = x.shape[d]
        if case % 2:
            arg = int(rng.integers(1, D + 2))
        else:
            cuts = np.sort(rng.integers(0, D + 1, 2))
            arg = [int(cuts[0]), int(cuts[1] - cuts[0]), int(D - cuts[1])]
        got = vnpu.ops.split(x, arg, d, card=CARD)
        ref = torch.split(t(x), arg, d)
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            same_bits(g, r.contiguous().numpy())
    x = data(rng, (2, 31, 3), np.float16)                # 31 pieces: three launches
    with vnpu.ops.profile() as prof:
        got = vnpu.ops.split(x, 1, 1, card=CARD)
    assert len(prof) == 3
    for g, r in zip(got, torch.split(t(x), 1, 1)):
        same_bits(g, r.contiguous().numpy())


def test_copies_on_every_engine(monkeypatch, small_tiles):
    rng = np.random.default_rng(7)
    x = data(rng, (5, 13, 7), np.float32)
    same_bits(on_every_engine(monkeypatch, lambda: PL.narrow(CARD, x, 1, 2, 9)), x[:, 2:11])
    same_bits(on_every_engine(monkeypatch, lambda: PL.narrow(CARD, x, 2, 3, 4)), x[:, :, 3:7])
    y = data(rng, (5, 2, 7), np.float32)
    same_bits(on_every_engine(monkeypatch, lambda: PL.cat(CARD, [x, y], 1)), np.concatenate([x, y], 1))
    z = data(rng, (3, 700), np.int8)                     # rows of 700 bytes in 256-byte transfers
    same_bits(on_every_engine(monkeypatch, lambda: PL.cat(CARD, [z, z[:, :300]], 1)),
              np.concatenate([z, z[:, :300]], 1))

    def first_split():
        pieces, results = PL.split(CARD, x, [4, 9], 1)
        return np.concatenate([p.reshape(-1) for p in pieces]), results[0]
    same_bits(on_every_engine(monkeypatch, first_split), np.concatenate([x[:, :4].reshape(-1), x[:, 4:].reshape(-1)]))


# --- pad --------------------------------------------------------------------------------------------------------------
PADS = [((2, 3, 5, 7), (1, 1, 1, 1)), ((2, 3, 5, 7), (2, 0, 0, 3)), ((4, 9), (3, -2)), ((3, 5, 7), (-1, 2, -2, 1)),
        ((1, 1, 30, 40), (1, 2, 3, 4)), ((2, 13, 11), (0, 0, 2, 1)), ((5,), (2, 3)), ((2, 3, 5), (0, 0, -3, 1)),
        ((1, 3000), (3, 5)), ((2, 2, 17000), (1, 1))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_pad_matches_pytorch(dtype):
    rng = np.random.default_rng(8)
    value = {np.float32: -0.0, np.float16: np.nan, np.int8: 5, np.int32: -7}[dtype]
    for shape, p in PADS:
        x = data(rng, shape, dtype)
        ref = F.pad(t(x), p, value=float(value)).numpy()
        same_bits(vnpu.ops.pad(x, p, value=value, card=CARD), ref)
        same_bits(PL.reference_pad(x, p, value), ref)
    x = data(rng, (3, 4), dtype)
    same_bits(vnpu.ops.pad(x, (1, 2), card=CARD), F.pad(t(x), (1, 2)).numpy())            # value None: 0


def test_pad_on_every_engine(monkeypatch, small_tiles):
    rng = np.random.default_rng(9)
    for shape, p, dt in [((2, 3, 5, 7), (1, 1, 1, 1), np.float32), ((1, 1, 31, 40), (1, 2, 3, 4), np.int8),
                         ((5, 3, 4), (1, 0, 1, 1), np.int8), ((7, 3), (0, 0, 0, 2), np.float32),    # short groups
                         ((2, 7, 40), (0, 0, 1, 1), np.int8),
                         ((2, 13, 11), (0, 0, 2, 1), np.float16), ((3, 90), (2, 5), np.int32)]:
        x = data(rng, shape, dt)
        out = on_every_engine(monkeypatch, lambda: PL.pad(CARD, x, p, value=1))
        same_bits(out, F.pad(t(x), p, value=1.0).numpy())


# --- to --------------------------------------------------------------------------------------------------------------
TORCH = {np.float32: torch.float32, np.float16: torch.float16, np.int8: torch.int8, np.int32: torch.int32}


@pytest.mark.parametrize("src", DTYPES)
def test_to_matches_pytorch(src):
    rng = np.random.default_rng(10)
    for dst in DTYPES:
        if np.dtype(src).kind == "f" and np.dtype(dst).kind == "i":        # in range: PyTorch is undefined out of it
            x = (rng.standard_normal(997) * 50).clip(-127.9, 127.9).astype(src)
            x[:9] = [0.5, -0.5, 1.5, -2.5, -0.0, 126.99, -127.5, 1e-30, -0.99]
        else:
            x = data(rng, (997,), src)
        out = vnpu.ops.to(x, dst, card=CARD)
        ref = t(x).to(TORCH[dst]).numpy()
        assert out.dtype == ref.dtype
        if np.dtype(dst).kind == "f":                                   # NaN payloads differ (PyTorch's fp16
            assert np.array_equal(np.isnan(out), np.isnan(ref))          # NaN is canonical), the rest exact
            ok = ~np.isnan(ref)
            same_bits(out[ok], ref[ok])
        else:
            same_bits(out, ref)
        same_bits(out if np.dtype(dst).kind != "f" else np.nan_to_num(out), PL.reference_to(x, dst)
                  if np.dtype(dst).kind != "f" else np.nan_to_num(PL.reference_to(x, dst)))
    x = np.array([8388607.5, -8388607.5, 2147483520.0, -2147483648.0, 16777215.0, 4194303.75], np.float32)
    same_bits(vnpu.ops.to(x, np.int32, card=CARD), t(x).to(torch.int32).numpy())          # large, exact


def test_to_saturates_out_of_range():
    x = np.array([300.0, -300.0, np.inf, -np.inf, np.nan, 3e9], np.float32)
    same_bits(vnpu.ops.to(x, np.int8, card=CARD), np.array([127, -128, 127, -128, 0, 127], np.int8))
    same_bits(vnpu.ops.to(x, np.int32, card=CARD), np.array([300, -300, 2**31 - 1, -2**31, 0, 2**31 - 1], np.int32))


def test_to_on_every_engine(monkeypatch):
    rng = np.random.default_rng(11)
    xf = (rng.standard_normal(200) * 50).astype(np.float32)
    xi = data(rng, (200,), np.int32)
    for x, dst in [(xf, np.float16), (xf, np.int8), (xf.astype(np.float16), np.int32), (xi, np.int8), (xi, np.float32),
                   (xi.astype(np.int8), np.int32), (xf, np.float32)]:
        out = on_every_engine(monkeypatch, lambda: PL.to(CARD, x, dst))
        same_bits(np.nan_to_num(out), np.nan_to_num(PL.reference_to(x, dst)))


# --- where ----------------------------------------------------------------------------------------------------------
def test_where_matches_pytorch():
    rng = np.random.default_rng(12)
    for case, dt in enumerate(MOVE_DTYPES):
        shape = rand_shape(rng, 1 + case % 4)
        c = rng.random(shape) < 0.5
        a, b = data(rng, shape, dt), data(rng, shape, dt)
        same_bits(vnpu.ops.where(c, a, b, card=CARD), torch.where(t(c), t(a), t(b)).numpy())
        s = np.array(-0.0 if np.dtype(dt).kind == "f" else 3).astype(dt).item()
        same_bits(vnpu.ops.where(c, a, s, card=CARD), np.where(c, a, np.array(s, dt)))
        same_bits(vnpu.ops.where(c, s, b, card=CARD), np.where(c, np.array(s, dt), b))
    c = rng.random((40, 50)) < 0.3
    x = data(rng, (40, 50), np.float32)
    same_bits(vnpu.ops.where(c, x, float("-inf"), card=CARD), torch.where(t(c), t(x), float("-inf")).numpy())


def test_where_on_every_engine(monkeypatch):
    rng = np.random.default_rng(13)
    for dt in (np.float32, np.float16, np.int8, np.float64):
        c = rng.random((7, 13)) < 0.5
        a, b = data(rng, (7, 13), dt), data(rng, (7, 13), dt)
        same_bits(on_every_engine(monkeypatch, lambda: PL.where(CARD, c, a, b)), np.where(c, a, b))
    same_bits(on_every_engine(monkeypatch, lambda: PL.where(CARD, c, a, 2.5)), np.where(c, a, np.float64(2.5)))


# --- gather, index_select -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES + (np.int64,))
def test_gather_and_index_select_match_pytorch(dtype):
    rng = np.random.default_rng(14)
    for case in range(6):
        rank = 1 + case % 4
        x = data(rng, rand_shape(rng, rank), dtype)
        d = int(rng.integers(-rank, rank))
        idx = rng.integers(0, x.shape[d], int(rng.integers(1, 6)))
        same_bits(vnpu.ops.index_select(x, d, idx, card=CARD), torch.index_select(t(x), d, t(idx)).numpy())
        ishape = [int(rng.integers(1, s + 1)) for s in x.shape]
        ishape[d] = int(rng.integers(1, 6))
        ind = rng.integers(0, x.shape[d], ishape)
        ref = torch.gather(t(x), d, t(ind)).numpy()
        same_bits(vnpu.ops.gather(x, d, ind, card=CARD), ref)
        same_bits(PL.reference_gather(x, d, ind), ref)


def test_gather_on_every_engine(monkeypatch):
    rng = np.random.default_rng(15)
    x = data(rng, (4, 7, 5), np.float32)
    ind = rng.integers(0, 7, (3, 2, 5))
    same_bits(on_every_engine(monkeypatch, lambda: PL.gather(CARD, x, 1, ind)), torch.gather(t(x), 1, t(ind)).numpy())
    idx = rng.integers(0, 5, 6)
    same_bits(on_every_engine(monkeypatch, lambda: PL.index_select(CARD, x.astype(np.float16), 2, idx)),
              torch.index_select(t(x.astype(np.float16)), 2, t(idx)).numpy())


def test_on_the_reference_card():
    """Twelve PEs with one DMA engine each (loads and stores on one queue)."""
    card = Card("reference")
    rng = np.random.default_rng(17)
    x = data(rng, (3, 37, 29), np.float32)
    same_bits(vnpu.ops.permute(x, (2, 0, 1), card=card), t(x).permute(2, 0, 1).contiguous().numpy())
    same_bits(vnpu.ops.cat([x, x[:, :5]], 1, card=card), torch.cat([t(x), t(x[:, :5])], 1).numpy())
    same_bits(vnpu.ops.pad(x, (1, 1, 2, 0), value=np.nan, card=card), F.pad(t(x), (1, 1, 2, 0), value=np.nan).numpy())
    c = rng.random(x.shape) < 0.5
    same_bits(vnpu.ops.where(c, x, -x, card=card), torch.where(t(c), t(x), -t(x)).numpy())
    ind = rng.integers(0, 29, (3, 37, 4))
    same_bits(vnpu.ops.gather(x, 2, ind, card=card), torch.gather(t(x), 2, t(ind)).numpy())


# --- empty inputs and bad arguments ---------------------------------------------------------------------------------
def test_empty_inputs_match_pytorch():
    e = np.zeros((0, 3), np.float32)
    f = np.zeros((4, 0, 2), np.int8)
    same_bits(vnpu.ops.permute(f, (2, 0, 1), card=CARD), t(f).permute(2, 0, 1).numpy())
    same_bits(vnpu.ops.transpose(e, card=CARD), t(e).T.contiguous().numpy())
    same_bits(vnpu.ops.narrow(e, 1, 1, 2, card=CARD), t(e).narrow(1, 1, 2).numpy())
    same_bits(vnpu.ops.cat([e, e], 0, card=CARD), torch.cat([t(e), t(e)]).numpy())
    same_bits(vnpu.ops.cat([f, f], 1, card=CARD), torch.cat([t(f), t(f)], 1).numpy())
    assert [p.shape for p in vnpu.ops.split(e, 2, 0, card=CARD)] == [p.shape for p in torch.split(t(e), 2, 0)]
    assert [p.shape for p in vnpu.ops.split(f, [2, 2], 0, card=CARD)] == [p.shape for p in torch.split(t(f), [2, 2])]
    same_bits(vnpu.ops.pad(e, (1, 1), card=CARD), F.pad(t(e), (1, 1)).numpy())
    same_bits(vnpu.ops.pad(np.zeros((3, 0), np.float32), (1, 2), value=-0.0, card=CARD),
              F.pad(t(np.zeros((3, 0), np.float32)), (1, 2), value=-0.0).numpy())
    same_bits(vnpu.ops.to(f, np.float16, card=CARD), t(f).to(torch.float16).numpy())
    c = np.zeros((0, 3), bool)
    same_bits(vnpu.ops.where(c, e, e, card=CARD), torch.where(t(c), t(e), t(e)).numpy())
    same_bits(vnpu.ops.index_select(e, 0, np.zeros(0, np.int64), card=CARD),
              torch.index_select(t(e), 0, t(np.zeros(0, np.int64))).numpy())
    x = data(np.random.default_rng(16), (3, 4), np.float32)
    same_bits(vnpu.ops.gather(x, 1, np.zeros((3, 0), np.int64), card=CARD),
              torch.gather(t(x), 1, t(np.zeros((3, 0), np.int64))).numpy())


def test_bad_arguments():
    x = np.zeros((3, 4), np.float32)
    bad = [(lambda: vnpu.ops.permute(x, (0, 0), card=CARD), "repeats"),
           (lambda: vnpu.ops.permute(x, (0,), card=CARD), "entries"),
           (lambda: vnpu.ops.transpose(x, 0, 2, card=CARD), "out of range"),
           (lambda: vnpu.ops.narrow(x, 1, 3, 2, card=CARD), "do not fit"),
           (lambda: vnpu.ops.slice_(x, 0, 0, 2, 2, card=CARD), "step"),
           (lambda: vnpu.ops.cat([x, np.zeros((3, 5), np.float32)], 0, card=CARD), "differ"),
           (lambda: vnpu.ops.cat([x, x.astype(np.float16)], card=CARD), "dtype"),
           (lambda: vnpu.ops.split(x, [1, 1], 0, card=CARD), "sum to"),
           (lambda: vnpu.ops.split(x, 0, 0, card=CARD), "positive"),
           (lambda: vnpu.ops.pad(x, (1, 1), mode="reflect", card=CARD), "constant"),
           (lambda: vnpu.ops.pad(x, (1,), card=CARD), "pad"),
           (lambda: vnpu.ops.pad(x, (-3, -2), card=CARD), "crops"),
           (lambda: vnpu.ops.to(x, np.float64, card=CARD), "converts"),
           (lambda: vnpu.ops.where(x > 0, x, x[:1], card=CARD), "shape"),
           (lambda: vnpu.ops.where(x, x, x, card=CARD), "bool"),
           (lambda: vnpu.ops.gather(x, 1, np.full((3, 1), 4), card=CARD), "out of range"),
           (lambda: vnpu.ops.gather(x, 1, np.zeros(3, np.int64), card=CARD), "dimensions"),
           (lambda: vnpu.ops.index_select(x, 0, np.array([0.5]), card=CARD), "integer"),
           (lambda: vnpu.ops.index_select(x, 0, np.array([-1]), card=CARD), "out of range")]
    for f, word in bad:
        with pytest.raises(vnpu.InvalidArgument, match=word):
            f()
