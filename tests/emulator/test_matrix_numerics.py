"""The matrix unit's arithmetic (emulator/matrix.py) against plain numpy, at the edges of its blocking:
shapes that are not multiples of the 2-row x 4-k blocks, int8 sums that wrap int32 and K past the 1024-long
exact fp32 chunks, accumulate mode."""
import numpy as np
import pytest

from vnpu.emulator.matrix import multiply_fp16, multiply_int8


def _run(fn, a_bytes, w_bytes, M, N, accumulate, init):
    pool = np.zeros(len(a_bytes) + 4 * M * N, np.uint8)
    pool[:len(a_bytes)] = a_bytes
    out_off = len(a_bytes)
    pool[out_off:].view(init.dtype)[:] = init.reshape(-1)
    fn(pool, 0, w_bytes.copy(), out_off, M, len(a_bytes) // M // (1 if fn is multiply_int8 else 2), N, accumulate)
    return pool[out_off:].view(init.dtype).reshape(M, N)


@pytest.mark.parametrize("M, K, N", [(1, 1, 1), (3, 5, 7), (5, 1031, 3), (2, 2500, 33), (7, 4, 1)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_int8_is_exact_int32_with_wrapping(M, K, N, accumulate):
    rng = np.random.default_rng(M * K * N)
    a = rng.choice(np.array([-128, 127, -1, 0, 1, 100], np.int8), (M, K))
    w = rng.choice(np.array([-128, 127, -127, 2], np.int8), (K, N))
    init = rng.integers(-2**31, 2**31, (M, N)).astype(np.int32)
    got = _run(multiply_int8, a.view(np.uint8).reshape(-1), w.view(np.uint8).reshape(-1), M, N, accumulate, init)
    want = a.astype(np.int64) @ w.astype(np.int64) + (init.astype(np.int64) if accumulate else 0)
    assert np.array_equal(got, want.astype(np.int32))   # modulo 2**32


@pytest.mark.parametrize("M, K, N", [(1, 1, 1), (3, 5, 7), (5, 9, 3), (4, 64, 16), (7, 3, 1)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_fp16_sums_in_k_order_like_the_plain_loop(M, K, N, accumulate):
    rng = np.random.default_rng(M + K + N)
    a = (rng.standard_normal((M, K)) * 100).astype(np.float16)
    w = (rng.standard_normal((K, N)) * 100).astype(np.float16)
    init = rng.standard_normal((M, N)).astype(np.float32)
    got = _run(multiply_fp16, a.view(np.uint8).reshape(-1), w.view(np.uint8).reshape(-1), M, N, accumulate, init)
    acc = np.zeros((M, N), np.float32)
    for k in range(K):                      # fp32, one product at a time, in K order
        acc = acc + a[:, k:k + 1].astype(np.float32) * w[k].astype(np.float32)
    want = acc + init if accumulate else acc
    assert np.array_equal(got, want)
