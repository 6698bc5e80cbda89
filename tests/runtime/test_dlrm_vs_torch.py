"""The DLRM on the six cards against an independent PyTorch model of the same network (fp32 throughout):
the card computes activations in fp16 and pools in fp32 in index order, so scores agree to fp16 rounding,
not bit for bit; a wrong layer order, a dropped table or a wrong interaction triangle would not."""
import numpy as np
import pytest

import vnpu
from vnpu.kernels.reference import unpack_rows
from vnpu.runtime import DLRM, Executor, preset

torch = pytest.importorskip("torch", reason="PyTorch (the test extra) is the independent reference here")

TOLERANCE = 2e-3     # on sigmoid scores; measured 1.3e-4 (rm1), 3.9e-4 (rm2), 1.4e-4 (rm3) over 4 batches (fp16 activations)


def torch_dlrm(m, dense, lookups):
    """The network written in PyTorch from the model's weights: bottom MLP, pooled embedding bags, pairwise
    dot-product interaction (lower triangle, i > j, row-major, after the dense row), top MLP, sigmoid."""
    c = m.cfg
    x = torch.from_numpy(dense.astype(np.float32))
    for w, b in m.bottom:
        x = torch.relu(x @ torch.from_numpy(w.astype(np.float32)) + torch.from_numpy(b))
    pooled = []
    for table, (idx, off) in zip(m.tables, lookups):
        weight = torch.from_numpy(unpack_rows(table, c.table_format, c.dim))
        pooled.append(torch.nn.functional.embedding_bag(torch.from_numpy(idx.astype(np.int64)), weight,
                                                        torch.from_numpy(off.astype(np.int64)), mode="sum"))
    z = torch.stack([x] + pooled, dim=1)                                   # [B, F, D]
    zz = z @ z.transpose(1, 2)                                              # [B, F, F]
    i, j = torch.tril_indices(zz.shape[1], zz.shape[2], offset=-1)
    y = torch.cat([x, zz[:, i, j]], dim=1)
    for k, (w, b) in enumerate(m.top):
        y = y @ torch.from_numpy(w.astype(np.float32)) + torch.from_numpy(b)
        y = torch.sigmoid(y) if k == len(m.top) - 1 else torch.relu(y)
    return y.numpy()


@pytest.mark.parametrize("name, fmt", [("rm1", "int8_rowwise"), ("rm2", "int4_rowwise"), ("rm3", "fp16")])
def test_scores_on_the_cards_match_a_pytorch_model(name, fmt):
    cfg = preset(name, rows_scale=1e-4, table_format=fmt)
    cfg.pooling = min(cfg.pooling, 20)
    m = DLRM(cfg)
    platform = vnpu.Platform()
    ex = Executor(platform, m, batch=16)
    rng = np.random.default_rng(11)
    worst = 0.0
    for r in range(2):
        dense, lookups = m.make_request(16, rng)
        out, _, _ = ex.submit(r, dense, lookups)
        for d in platform.devices:
            d.synchronize()
        want = torch_dlrm(m, dense, lookups)
        assert out.shape == want.shape
        worst = max(worst, float(np.abs(out - want).max()))
    ex.release()
    platform.close()
    assert worst < TOLERANCE, f"{name}: max |card - torch| = {worst:.2e}"
