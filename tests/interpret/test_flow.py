"""Attention flow: the one-layer oracle and networkx's float max-flow as the reference."""

import networkx as nx
import pytest
import torch

from attnkit.interpret.flow import flow


def _mixing(weights):
    fused = weights.mean(1)[0].double() + torch.eye(weights.shape[-1], dtype=torch.float64)
    return fused / fused.sum(-1, keepdim=True)


def test_one_layer_flow_is_the_normalized_attention():
    torch.manual_seed(0)
    weights = torch.rand(1, 2, 5, 5).softmax(-1)
    torch.testing.assert_close(flow([weights])[0], _mixing(weights).float())


def test_flow_equals_networkx_max_flow():
    """Abnar & Zuidema's construction solved with networkx in floating point."""
    torch.manual_seed(1)
    n, layers = 5, [torch.rand(1, 3, 5, 5).pow(4).softmax(-1) for _ in range(3)]
    graph = nx.DiGraph()
    for level, weights in enumerate(layers):
        mixing = _mixing(weights)
        for i in range(n):
            for j in range(n):
                graph.add_edge((level, j), (level + 1, i), capacity=float(mixing[i, j]))
    expected = torch.tensor(
        [[nx.maximum_flow_value(graph, (0, j), (3, i)) for j in range(n)] for i in range(n)],
        dtype=torch.float64,
    )
    expected = expected / expected.sum(-1, keepdim=True)
    got = flow(layers)[0].double()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        flow(layers, targets=[3])[0, 0].double(), expected[3], atol=1e-6, rtol=0
    )


def test_flow_errors():
    with pytest.raises(ValueError, match="targets must be"):
        flow([torch.eye(3)[None, None]], targets=[3])
    with pytest.raises(ValueError, match="at least one layer"):
        flow([])
