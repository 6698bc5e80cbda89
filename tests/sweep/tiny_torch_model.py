"""A `file.py:callable` model for `vnpu sweep --model` (tests/sweep/test_sweep_models.py): returns (model, inputs)."""
import torch


def mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 16)).eval()
    return model, (torch.randn(4, 64),)


def not_a_pair():
    return 42
