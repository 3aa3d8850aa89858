"""Attention flow: the one-layer oracle and networkx's float max-flow as the reference, for the
compiled solver and for the scipy fallback."""

import networkx as nx
import numpy as np
import pytest
import torch

from attnkit.interpret import attention_flow as flow_module
from attnkit.interpret.attention_flow import flow


@pytest.fixture(params=["c", "scipy"])
def solver(request, monkeypatch):
    """Run a test with the C solver (skipped without a compiler) and with scipy's."""
    if request.param == "c":
        if flow_module._compiled() is None:
            pytest.skip("no C compiler: the scipy fallback is tested instead")
    else:
        monkeypatch.setattr(flow_module, "_compiled", lambda: None)
    return request.param


def _mixing(weights):
    fused = weights.mean(1)[0].double() + torch.eye(weights.shape[-1], dtype=torch.float64)
    return fused / fused.sum(-1, keepdim=True)


def _networkx_flows(layers):
    """Unnormalized flows ``[i, j]`` from (0, j) to (L, i), Abnar & Zuidema's construction."""
    n = layers[0].shape[-1]
    graph = nx.DiGraph()
    for level, weights in enumerate(layers):
        mixing = _mixing(weights)
        for i in range(n):
            for j in range(n):
                graph.add_edge((level, j), (level + 1, i), capacity=float(mixing[i, j]))
    last = len(layers)
    return torch.tensor(
        [[nx.maximum_flow_value(graph, (0, j), (last, i)) for j in range(n)] for i in range(n)],
        dtype=torch.float64,
    )


def test_one_layer_flow_is_the_normalized_attention(solver):
    torch.manual_seed(0)
    weights = torch.rand(1, 2, 5, 5).softmax(-1)
    torch.testing.assert_close(flow([weights])[0], _mixing(weights).float())


def test_flow_equals_networkx_max_flow(solver):
    """Abnar & Zuidema's construction solved with networkx in floating point."""
    torch.manual_seed(1)
    layers = [torch.rand(1, 3, 5, 5).pow(4).softmax(-1) for _ in range(3)]
    expected = _networkx_flows(layers)
    expected = expected / expected.sum(-1, keepdim=True)
    got = flow(layers)[0].double()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        flow(layers, targets=[3])[0, 0].double(), expected[3], atol=1e-6, rtol=0
    )


def test_flow_below_the_trivial_bound_equals_networkx(solver):
    """Sparse, peaked attention (a [CLS]-like token attending to itself only, some zero
    weights): most flows stay below min(out-capacity of the source, 1), so a solve needs more
    than its first phase, and pairs with no path get zero."""
    torch.manual_seed(2)
    n, layers = 7, []
    for _ in range(4):
        scores = torch.randn(1, 2, n, n) * 3
        scores[..., 0, :] = -torch.inf
        scores[..., 0, 0] = 0.0  # token 0 attends to itself only
        scores[..., 1:, 0] = -torch.inf  # and nobody attends to token 0
        layers.append(scores.softmax(-1))
    raw = _networkx_flows(layers)
    bound = torch.minimum(_mixing(layers[0]).sum(0), torch.ones(n))  # [j]
    assert (raw < bound[None, :] - 1e-3).float().mean() > 0.3
    assert raw[0, 1:].eq(0).all() and raw[1:, 0].eq(0).all()
    expected = raw / raw.sum(-1, keepdim=True)
    torch.testing.assert_close(flow(layers)[0].double(), expected, atol=1e-6, rtol=0)


def test_compiled_and_scipy_solvers_agree_exactly():
    """Same integer capacities, same integer max-flows, on a batch of two at 12 tokens."""
    lib = flow_module._compiled()
    if lib is None:
        pytest.skip("no C compiler")
    torch.manual_seed(3)
    layers = [(torch.randn(2, 4, 12, 12) * 2).softmax(-1) for _ in range(4)]
    for example in range(2):
        caps = flow_module._capacities(layers, example, "max")
        targets = [11, 0, 5]
        compiled = flow_module._solve_c(lib, caps, targets)
        np.testing.assert_array_equal(compiled, flow_module._solve_scipy(caps, targets))


def test_compiled_solver_on_random_integer_graphs():
    """Small integer graphs with many missing edges, one to four layers: every pair's max-flow
    equals scipy's, including the pairs with no path (zero)."""
    lib = flow_module._compiled()
    if lib is None:
        pytest.skip("no C compiler")
    rng = np.random.default_rng(0)
    for _ in range(40):
        n, layers = int(rng.integers(2, 9)), int(rng.integers(1, 5))
        caps = rng.integers(0, 50, size=(layers, n, n)).astype(np.int32)
        caps[rng.random(caps.shape) < 0.4] = 0
        targets = list(range(n))
        np.testing.assert_array_equal(
            flow_module._solve_c(lib, caps, targets), flow_module._solve_scipy(caps, targets)
        )


def test_flow_errors():
    with pytest.raises(ValueError, match="targets must be"):
        flow([torch.eye(3)[None, None]], targets=[3])
    with pytest.raises(ValueError, match="at least one layer"):
        flow([])
