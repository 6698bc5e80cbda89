"""torch.compile(model, backend="vnpu"): the entry-point backend against eager PyTorch."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import vnpu  # noqa: E402
from vnpu.runtime.graph.frontends.torch_backend import vnpu_backend  # noqa: E402


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3))).softmax(-1)


def test_the_backend_is_registered_by_entry_point():
    from importlib.metadata import entry_points
    assert any(e.name == "vnpu" for e in entry_points(group="torch_dynamo_backends"))


def test_torch_compile_with_the_vnpu_backend_matches_eager():
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 10, 10)
    torch._dynamo.reset()
    c = torch.compile(m, backend="vnpu")
    with torch.no_grad():
        got, want = c(x), m(x)
    assert isinstance(got, torch.Tensor) and got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    prog = vnpu_backend.last_program
    assert prog.coverage().counts()["unsupported"] == 0 and prog.profile().records


def test_options_choose_dtype_and_ops_vnpu_lacks_run_on_the_host_or_fail():
    class Cum(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(torch.relu(x), dim=1) * 2

    x = torch.randn(4, 6)
    torch._dynamo.reset()
    c = torch.compile(Cum(), backend="vnpu", options={"dtype": "fp32"})
    np.testing.assert_allclose(c(x).numpy(), Cum()(x).numpy(), rtol=1e-5, atol=1e-6)
    assert vnpu_backend.last_program.coverage().counts()["host"] == 1
    torch._dynamo.reset()
    strict = torch.compile(Cum(), backend="vnpu", options={"allow_host": False})
    with pytest.raises(Exception) as e:
        strict(x)
    assert "cumsum" in str(e.value)
    with pytest.raises(Exception, match="unknown options"):
        torch._dynamo.reset()
        torch.compile(Cum(), backend="vnpu", options={"colour": 1})(x)
