"""The PyTorch front end (issue 17): models exported with torch.export and converted to vnpu's graph IR compute
what PyTorch eager computes (on the host interpreter, float32), every node says where it came from in this file,
an op vnpu lacks becomes a `foreign` node that still runs through torch, and misuse is InvalidArgument."""
import inspect
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from vnpu.errors import InvalidArgument  # noqa: E402
from vnpu.runtime.graph.frontends.torch_frontend import (HANDLERS, KEEP, TorchOp, from_exported_program,  # noqa: E402
                                                        from_torch)
from vnpu.runtime.graph.opset import OPS  # noqa: E402
from vnpu.runtime.graph.interp import run_host  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning")

RTOL = 1e-5      # of the output's magnitude: the host computes in float64, PyTorch in float32


def convert(model, *inputs, foreign=()):
    """Convert `model`, check the graph's outputs against eager PyTorch and its foreign ops are `foreign`."""
    torch.manual_seed(0)
    model.eval()
    g = from_torch(model, inputs)
    with torch.no_grad():
        ref = model(*inputs)
    refs = [ref] if isinstance(ref, torch.Tensor) else [r for r in ref if r is not None]
    outs = run_host(g, [x.numpy() for x in inputs])
    assert len(outs) == len(refs)
    for o, r in zip(outs, refs):
        r = r.numpy()
        assert o.shape == r.shape and o.dtype == r.dtype, (o.shape, o.dtype, r.shape, r.dtype)
        if r.dtype.kind in "iub":
            np.testing.assert_array_equal(o, r)
        else:
            scale = max(float(np.abs(r).max()) if r.size else 0.0, 1e-3)
            err = float(np.abs(o.astype(np.float64) - r).max()) if r.size else 0.0
            assert err <= RTOL * scale, f"max error {err:.3g} of magnitude {scale:.3g}\n{g}"
    got = sorted({n.attrs["op"] for n in g.nodes if n.op == "foreign"})
    assert got == sorted(foreign), f"foreign ops {got}\n{g}"
    return g


def ops(g):
    return [n.op for n in g.nodes]


# --- models ---------------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.pool(F.relu(self.bn1(self.conv1(x))))
        y = F.relu(self.bn2(self.conv2(y)) + y)               # residual add
        y = F.adaptive_avg_pool2d(y, 1)
        return self.fc(torch.flatten(y, 1))


def _randomize_bn(m):
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    g = torch.Generator().manual_seed(1)
    for b in m.modules():
        if isinstance(b, nn.BatchNorm2d):
            with torch.no_grad():
                b.running_mean.copy_(torch.randn(b.num_features, generator=g) * 0.1)
                b.running_var.copy_(torch.rand(b.num_features, generator=g) + 0.5)
                b.weight.copy_(torch.rand(b.num_features, generator=g) + 0.5)
                b.bias.copy_(torch.randn(b.num_features, generator=g) * 0.1)
    return m


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + idt)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.layer2(self.layer1(self.stem(x)))
        return self.fc(y.mean((2, 3)))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.ln = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x):
        y = self.ln(F.gelu(self.fc1(x)))
        return self.fc2(F.gelu(y, approximate="tanh"))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.pw = nn.Conv2d(6, 4, 1)
        self.dw2 = nn.Conv2d(4, 8, 3, stride=2, padding=(1, 2), dilation=(1, 2), groups=4, bias=False)

    def forward(self, x):
        return self.dw2(F.relu6(self.pw(F.relu6(self.dw(x)))))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2, bias=False)

    def forward(self, x):
        return torch.sigmoid(self.up2(torch.tanh(self.up1(x))))


class DLRM(nn.Module):
    """Bottom MLP, pooled embedding bags (sum, with offsets), a one-hot embedding, the pairwise dot interaction
    as bmm + tril indices, top MLP, sigmoid."""

    def __init__(self, dim=8):
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, dim), nn.ReLU())
        self.bags = nn.ModuleList([nn.EmbeddingBag(20, dim, mode="sum"), nn.EmbeddingBag(30, dim, mode="sum")])
        self.emb = nn.Embedding(10, dim)
        f = 4
        self.top = nn.Sequential(nn.Linear(dim + f * (f - 1) // 2, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, dense, idx0, off0, idx1, off1, cat):
        x = self.bottom(dense)
        pooled = [self.bags[0](idx0, off0), self.bags[1](idx1, off1), self.emb(cat)]
        z = torch.stack([x] + pooled, dim=1)                         # [B, F, D]
        zz = torch.bmm(z, z.transpose(1, 2))                         # [B, F, F]
        i, j = torch.tril_indices(z.shape[1], z.shape[1], offset=-1)
        return torch.sigmoid(self.top(torch.cat([x, zz[:, i, j]], dim=1)))


class MatMuls(nn.Module):
    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.randn(5, 4))
        self.b = nn.Parameter(torch.randn(5))
        self.V = nn.Parameter(torch.randn(4, 6))

    def forward(self, x, y, a, b, v):                # x [3, 4], y [4, 6], a [2, 3, 4], b [2, 3, 5], v [4]
        return (torch.addmm(self.b, x, self.W.t()), torch.addmm(self.b[:3, None], x, y, beta=0.5, alpha=2.0),
                x @ self.V, torch.mm(y.t(), x.t()), torch.bmm(a.transpose(1, 2), b), a @ y,
                torch.matmul(a, a.transpose(-1, -2)), v @ self.W.t(), x @ v, F.linear(a, x), x @ y)


class Pools(nn.Module):
    def forward(self, x):
        return (F.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True),
                F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                F.avg_pool2d(x, 2, divisor_override=3), F.adaptive_avg_pool2d(x, (2, 3)),
                F.max_pool2d(x, (2, 3), (1, 2)), F.adaptive_max_pool2d(x, (3, 2)), F.adaptive_max_pool2d(x, 2),
                F.group_norm(x, 2), F.interpolate(x, scale_factor=2),
                F.batch_norm(x[:, :, 0], torch.zeros(4), torch.ones(4)))


class Indexing(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(7, 3))

    def forward(self, x, i):                                     # x [4, 5, 6], i [2, 3] int64
        return (x[:, i], x[..., torch.tensor([0, -1, 2])], self.table[i], torch.gather(x, 2, i[None].expand(4, 2, 3)),
                torch.index_select(x, 1, i[0]), x[:, torch.tensor([1, 0]), torch.tensor([[2], [5]])])


class Shapes(nn.Module):
    def forward(self, x, y):                                         # x [2, 3, 4, 5], y [2, 4]
        a = torch.cat([x, x * 2], dim=1)                             # [2, 6, 4, 5]
        b, c = torch.split(a, [2, 4], dim=1)
        d = c[:, 1:4, ::2, -3:]                                      # slices with a step
        e = d.permute(0, 3, 1, 2)
        f = x[:, 1]                                                  # select
        g = f.unsqueeze(1).squeeze(1).unsqueeze(-1)
        h = y[:, None, :, None].expand(2, 3, 4, 5)
        p = F.pad(x, (1, 2, 0, 1), value=0.5)
        q = F.pad(x, (-1, 1))                                        # negative padding crops
        r = x.transpose(1, 3).reshape(2, -1)
        s = x.clone()
        s[:, 0] = y[:, :, None]                                      # -> copy + expand + where
        return b, e, g, h + x, p, q, r, torch.chunk(x, 2, dim=-1)[1], s


class Softmaxes(nn.Module):
    def forward(self, x):
        return (F.softmax(x, dim=1), F.log_softmax(x, dim=0), torch.softmax(x, -1), x.sum(1), x.mean(),
                x.amax((0, 2), keepdim=True), x.argmax(2), x.max(1).values, x.min(-1)[0])


class Elementwise(nn.Module):
    def forward(self, x, n):
        a = (2 - x) * 3 / 4 + x ** 2 - torch.sqrt(x.abs()) + torch.rsqrt(x.abs() + 1)
        b = torch.where(x > 0, x, torch.zeros_like(x)) + x.clamp(-0.5, 0.5) + F.hardtanh(x) + F.leaky_relu(x, 0.2)
        c = torch.exp(-x) + torch.erf(x) + torch.log(x.abs() + 1) + x.reciprocal() + torch.maximum(x, x * 0.5)
        d = torch.minimum(x, torch.tensor(0.25)) + F.silu(x) + x ** 0.5 * 0 + torch.pow(2.0, x)
        m = n.to(torch.float32) * 0.5 + n.sum(1, keepdim=True)       # int64 in, promoted
        return a, b, c, d, m, n * 2 + 1, (n // 1).int(), (x > 0.5).sum(1), n[:, 1:].int().sum(), n.argmax(1)


# --- tests ------------------------------------------------------------------------------------------------------
def test_small_cnn():
    torch.manual_seed(0)
    g = convert(_randomize_bn(SmallCNN()), torch.randn(2, 3, 16, 16))
    assert ops(g) == ["conv2d", "batch_norm", "relu", "max_pool2d", "conv2d", "batch_norm", "add", "relu",
                      "adaptive_avg_pool2d", "reshape", "linear"]
    assert g.inputs == ["x"] and len(g.outputs) == 1
    assert {v.name for v in g.values.values() if v.is_const} >= {"conv1.weight", "bn1.running_var", "fc.bias"}


def test_resnet_blocks_with_stride_and_downsample():
    torch.manual_seed(0)
    g = convert(_randomize_bn(TinyResNet()), torch.randn(2, 3, 32, 32))
    convs = [n for n in g.nodes if n.op == "conv2d"]
    assert len(convs) == 6 and sum(n.attrs.get("stride") == 2 for n in convs) == 3
    assert ops(g).count("batch_norm") == 6 and ops(g)[-3:] == ["adaptive_avg_pool2d", "reshape", "linear"]


def test_transformer_encoder_layer():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, batch_first=True, dim_feedforward=128, dropout=0)
    g = convert(layer, torch.randn(2, 7, 64))
    # the export takes the composite (not the fused fast) path; linear and SDPA are kept whole
    assert ops(g).count("linear") == 4 and ops(g).count("scaled_dot_product_attention") == 1
    assert ops(g).count("layer_norm") == 2 and "foreign" not in ops(g)


class TinyBert(nn.Module):
    """Token embeddings + positions, a pre-norm encoder of two layers with a key padding mask, a causal
    multi-head attention returning its (head-averaged) weights, a tanh pooler on the first token."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 32)
        self.pos = nn.Parameter(torch.randn(1, 6, 32) * 0.1)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, activation="gelu",
                                           norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, ids, pad):
        y = self.enc(self.emb(ids) + self.pos, src_key_padding_mask=pad)
        a, w = self.mha(y, y, y, attn_mask=torch.triu(torch.full((6, 6), float("-inf")), 1))
        return torch.tanh(a[:, 0]), w


def test_bert_style_encoder_with_padding_and_causal_masks():
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 6))
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    g = convert(TinyBert(), ids, pad)
    assert ops(g).count("scaled_dot_product_attention") == 2     # the encoder's (need_weights=False)
    assert ops(g).count("softmax") == 1 and ops(g).count("bmm") == 2      # the weights-returning MHA
    assert ops(g).count("where") == 1                             # the padding mask -> an additive -inf mask


class Attention(nn.Module):
    def forward(self, q, k, v, m):
        return (F.scaled_dot_product_attention(q, k, v, is_causal=True),
                F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.3),
                F.scaled_dot_product_attention(q, k, v, attn_mask=m.float() * -2.0))


def test_scaled_dot_product_attention_variants():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    m = torch.rand(5, 7) > 0.3
    m[:, 0] = True
    g = convert(Attention(), q, k, v, m)
    attn = [n.attrs for n in g.nodes if n.op == "scaled_dot_product_attention"]
    assert attn == [{"is_causal": True}, {"scale": 0.3}, {}]


def test_mlp_gelu_layer_norm():
    torch.manual_seed(0)
    g = convert(MLP(), torch.randn(3, 5, 16))
    assert ops(g) == ["linear", "gelu", "layer_norm", "gelu", "linear"]
    assert [n.attrs.get("approximate") for n in g.nodes if n.op == "gelu"] == [None, "tanh"]


def test_depthwise_and_dilated_grouped_conv():
    torch.manual_seed(0)
    g = convert(Depthwise(), torch.randn(2, 6, 9, 11))
    assert [n.attrs.get("groups") for n in g.nodes if n.op == "conv2d"] == [6, None, 4]
    assert ops(g).count("clamp") == 2


def test_conv_transpose2d():
    torch.manual_seed(0)
    g = convert(Decoder(), torch.randn(1, 8, 5, 6))
    assert ops(g) == ["conv_transpose2d", "tanh", "conv_transpose2d", "sigmoid"]


def test_conv1d():
    torch.manual_seed(0)
    g = convert(nn.Sequential(nn.Conv1d(4, 6, 3, padding=1, stride=2), nn.ReLU()), torch.randn(2, 4, 15))
    assert "conv2d" in ops(g)


def test_dlrm_embedding_bags_and_interaction():
    torch.manual_seed(0)
    B = 3
    inputs = (torch.randn(B, 4), torch.tensor([1, 5, 7, 19, 0, 3]), torch.tensor([0, 2, 2]),
              torch.tensor([29, 4, 4, 11]), torch.tensor([0, 1, 3]), torch.tensor([7, 0, 9]))
    g = convert(DLRM(), *inputs)
    assert ops(g).count("embedding_bag") == 2 and ops(g).count("embedding") == 1
    bmm = [n for n in g.nodes if n.op == "bmm"]
    assert len(bmm) == 1 and bmm[0].attrs == {"transpose_b": True} and bmm[0].inputs[0] == bmm[0].inputs[1]
    assert "index_select" in ops(g) and "foreign" not in ops(g)


def test_matrix_products_fold_transposes():
    torch.manual_seed(0)
    g = convert(MatMuls(), torch.randn(3, 4), torch.randn(4, 6), torch.randn(2, 3, 4), torch.randn(2, 3, 5),
                torch.randn(4))
    first = g.nodes[0]
    assert first.op == "linear" and first.inputs[1:] == ["W", "b.0"]    # addmm(b, x, W.t()) = linear(x, W, b)
    bmm = [n.attrs for n in g.nodes if n.op == "bmm"]
    assert bmm == [{"transpose_a": True}, {"transpose_b": True}]
    assert ops(g).count("linear") == 5 and "foreign" not in ops(g)


def test_pooling_and_foreign_ops_with_several_outputs():
    torch.manual_seed(0)
    g = convert(Pools(), torch.randn(2, 4, 9, 10), foreign=["aten.adaptive_max_pool2d.default",
                                                           "aten.native_group_norm.default",
                                                           "aten.upsample_nearest2d.vec"])
    assert ops(g).count("max_pool2d") == 3 and ops(g).count("avg_pool2d") == 2
    gn = next(n for n in g.nodes if n.op == "foreign" and n.attrs["op"] == "aten.native_group_norm.default")
    assert len(gn.outputs) == 3 and gn.outputs[0] in g.outputs


def test_indexing():
    torch.manual_seed(0)
    g = convert(Indexing(), torch.randn(4, 5, 6), torch.tensor([[0, 4, 2], [1, 1, 3]]))
    assert ops(g).count("index_select") == 5 and ops(g).count("gather") == 1 and "foreign" not in ops(g)


def test_data_movement():
    torch.manual_seed(0)
    g = convert(Shapes(), torch.randn(2, 3, 4, 5), torch.randn(2, 4))
    for op in ("cat", "split", "slice", "permute", "reshape", "expand", "pad"):
        assert op in ops(g), op


def test_softmax_dims_and_reductions():
    torch.manual_seed(0)
    g = convert(Softmaxes(), torch.randn(3, 4, 5))
    assert [n.attrs["dim"] for n in g.nodes if n.op == "softmax"] == [1, -1]


def test_elementwise_scalars_and_dtypes():
    torch.manual_seed(0)
    x = torch.randn(3, 4).abs() + 0.1
    # comparisons and floor division are not vnpu ops
    g = convert(Elementwise(), x, torch.arange(12).reshape(3, 4), foreign=["aten.gt.Scalar", "aten.div.Tensor_mode"])
    assert "pow" in ops(g)                                 # 2.0 ** x; x ** 2 is mul, x ** 0.5 sqrt
    assert ops(g).count("sqrt") == 2 and ops(g).count("clamp") == 2


def test_sources_point_at_the_model_code():
    g = from_torch(SmallCNN(), (torch.randn(1, 3, 8, 8),))
    text = str(g)
    src, start = inspect.getsourcelines(SmallCNN.forward)
    line = start + next(i for i, s in enumerate(src) if "self.conv1(x)" in s)
    conv = next(n for n in g.nodes if n.op == "conv2d")
    assert conv.source == f"test_torch_frontend.py:{line} in forward (aten.convolution.default)"
    assert f"# test_torch_frontend.py:{line} in forward (aten.convolution.default)" in text
    assert all(n.source.startswith("test_torch_frontend.py:") for n in g.nodes)


def test_unsupported_op_becomes_foreign_and_runs_through_torch():
    class Cum(nn.Module):
        def forward(self, x):
            return torch.relu(torch.cumsum(x, dim=1)) * 2

    g = convert(Cum(), torch.randn(2, 6), foreign=["aten.cumsum.default"])
    node = next(n for n in g.nodes if n.op == "foreign")
    assert node.attrs["framework"] == "torch" and node.attrs["types"] == [((2, 6), "float32")]
    assert node.attrs["needs"] == "a vnpu op for aten.cumsum.default"
    assert isinstance(node.attrs["fn"], TorchOp) and "test_torch_frontend.py:" in node.source
    assert "foreign(%x)" in str(g)
    fn = pickle.loads(pickle.dumps(node.attrs["fn"]))              # the graph can be saved with its fn
    np.testing.assert_array_equal(fn(np.ones((2, 3), np.float32))[0], [[1, 2, 3], [1, 2, 3]])


def test_max_pool_indices_used_becomes_foreign():
    class Unpool(nn.Module):
        def forward(self, x):
            y, i = F.max_pool2d(x, 2, return_indices=True)
            return y + 1, i

    g = convert(Unpool(), torch.randn(1, 2, 4, 4), foreign=["aten.max_pool2d_with_indices.default"])
    node = next(n for n in g.nodes if n.op == "foreign")
    assert "indices output used" in node.attrs["needs"] and len(node.outputs) == 2


def test_exported_program_with_bf16_weights():
    torch.manual_seed(0)
    m = nn.Linear(6, 3).to(torch.bfloat16)
    ep = torch.export.export(m, (torch.randn(2, 6, dtype=torch.bfloat16),))
    g = from_exported_program(ep)
    assert g.values["weight"].dtype == "float32" and g.values[g.inputs[0]].dtype == "float32"
    x = torch.randn(2, 6).to(torch.bfloat16).float()
    with torch.no_grad():
        ref = m.float()(x).numpy()
    np.testing.assert_allclose(run_host(g, [x.numpy()])[0], ref, rtol=1e-5, atol=1e-6)


def test_dynamic_export_is_specialized_to_its_example_sizes():
    torch.manual_seed(0)
    m, x = _randomize_bn(SmallCNN()).eval(), torch.randn(2, 3, 16, 16)
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    g = from_exported_program(ep, name="cnn")
    assert g.name == "cnn" and g.values["x"].shape == (2, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(run_host(g, [x.numpy()])[0], m(x).numpy(), rtol=1e-5, atol=1e-6)


def test_numpy_and_single_tensor_example_inputs():
    m = nn.Linear(4, 3)
    assert from_torch(m, (np.ones((2, 4), np.float32),)).values["input"].shape == (2, 4)
    assert from_torch(m, torch.ones(5, 4)).values["input"].shape == (5, 4)


def test_misuse_is_invalid_argument():
    with pytest.raises(InvalidArgument, match="nn.Module"):
        from_torch(lambda x: x, (torch.randn(2),))
    with pytest.raises(InvalidArgument, match="could not export"):             # wrong shape for the model
        from_torch(nn.Linear(4, 3), (torch.randn(2, 5),))
    with pytest.raises(InvalidArgument, match="could not export"):             # wrong number of inputs
        from_torch(nn.Linear(4, 3), (torch.randn(2, 4), torch.randn(2)))
    with pytest.raises(InvalidArgument, match="tuple or list"):
        from_torch(nn.Linear(4, 3), 3)

    class DataDependent(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x - 1

    with pytest.raises(InvalidArgument, match="could not export DataDependent"):
        from_torch(DataDependent(), (torch.randn(3),))
    with pytest.raises(InvalidArgument, match="ExportedProgram"):
        from_exported_program(nn.Linear(2, 2))
    with pytest.raises(InvalidArgument, match="static shapes"):
        from_torch(nn.Linear(2, 2), (torch.randn(1, 2),), dynamic=True)

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros(1))

        def forward(self, x):
            self.calls += 1
            return x + self.calls

    with pytest.raises(InvalidArgument, match="updates buffer 'calls'"):
        from_torch(Counter(), (torch.randn(2),))



def test_op_tables_name_real_aten_ops():
    for name in list(HANDLERS) + list(KEEP):
        ns, op, overload = name.split(".")
        assert isinstance(getattr(getattr(getattr(torch.ops, ns), op), overload), torch._ops.OpOverload), name
    assert {"conv2d", "linear", "bmm", "softmax", "embedding_bag", "foreign"} <= set(OPS)
