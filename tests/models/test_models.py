"""Every model: same inputs, one logit per row, learns; warm start keeps the parent's rows."""

from __future__ import annotations

import pytest
import torch

from reloop_cli.models import MODELS, build_model
from reloop_cli.spec.sections import ModelSpec


def toy_data(n: int = 4_000, seed: int = 0):
    """Two categorical fields whose interaction decides the click, plus one dense field."""
    g = torch.Generator().manual_seed(seed)
    cat = torch.randint(1, 6, (n, 2), generator=g)
    dense = torch.randn(n, 1, generator=g)
    main = 0.6 * (cat[:, 0] - 3).float()
    logit = main + torch.where(cat[:, 0] == cat[:, 1], 2.0, -1.5) + 0.8 * dense[:, 0]
    label = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return cat, dense, label


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_model_learns_better_than_a_constant(name):
    torch.manual_seed(0)
    cat, dense, label = toy_data()
    spec = ModelSpec(name=name, embedding_dim=8, hidden_units=(16,), cin_layers=(4,))
    model = build_model(spec, [6, 6], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(cat, dense), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    base = label.mean()
    constant = -(base * base.log() + (1 - base) * (1 - base).log())
    model.eval()
    with torch.no_grad():
        final = torch.nn.functional.binary_cross_entropy_with_logits(model(cat, dense), label)
    assert model(cat, dense).shape == (len(label),)
    assert final < constant - 0.05


def test_warm_start_copies_the_rows_of_kept_values_at_each_fields_offset():
    import numpy as np

    spec = ModelSpec(name="deepfm", embedding_dim=4, hidden_units=(8,))
    parent = build_model(spec, [3, 5], 0)
    child = build_model(spec, [4, 7], 0)
    fresh = child.embedding.table.weight.detach().clone()
    kept = [  # field 0 keeps rows 0-2; field 1 keeps 0, 1 and 3 (row 2's value was evicted)
        (np.array([0, 1, 2]), np.array([0, 1, 2])),
        (np.array([0, 1, 3]), np.array([0, 1, 3])),
    ]
    child.embedding.copy_rows(parent.embedding.table.weight.detach(), [3, 5], kept)
    old, new = parent.embedding.table.weight, child.embedding.table.weight
    assert torch.equal(new[0:3], old[0:3])  # field 0 kept
    assert torch.equal(new[[4, 5, 7]], old[[3, 4, 6]])  # field 1's kept rows at its new offset
    assert torch.equal(new[[3, 6, 8, 9, 10]], fresh[[3, 6, 8, 9, 10]])  # the rest stay fresh


def test_dropout_drops_p_of_units_keeps_the_mean_and_is_seeded():
    from reloop_cli.models.dropout import Dropout

    layer = Dropout(0.2)
    x = torch.ones(2_000, 400, requires_grad=True)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    again = layer(x)
    assert torch.equal(first, again)  # torch.manual_seed decides the mask
    dropped = (first == 0).float().mean().item()
    assert abs(dropped - 0.2) < 0.005
    assert abs(first.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation
    first.sum().backward()
    assert torch.equal(x.grad, first.detach())  # gradient flows through kept units, scaled
    assert not torch.equal(layer(x), first)  # a new draw on the next call
    layer.eval()
    assert layer(x) is x
