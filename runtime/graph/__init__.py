"""The model compiler and its runtime (Glow's shape): front ends (PyTorch through torch.export, ONNX, vnpu's
own graph builder) produce a typed graph IR (`ir`), passes optimize and quantize it (`passes`), every op is
lowered to the card's kernels or reported (`opset`), the partitioner places it on the platform's cards and the
executor runs it there (`program`).
"""
from .ir import Graph, Node, Value  # noqa: F401
