import pytest
import torch
from torch import nn

from trainlab.config import OptimConfig
from trainlab.engine.optim import OPTIMIZERS, build_optimizer, parameter_groups


def small_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_takes_a_step_that_lowers_the_loss(name):
    torch.manual_seed(0)
    model = small_model()
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    lr = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05}.get(name, 0.01)
    optimizer = build_optimizer(model, OptimConfig(name=name, lr=lr, weight_decay=1e-4))
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_optimizer_kinds_match_names():
    model = small_model()
    kinds = {
        "sgd": (torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
        "momentum": (torch.optim.SGD, {"momentum": 0.8, "nesterov": False}),
        "nesterov": (torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {}),
        "rmsprop": (torch.optim.RMSprop, {}),
        "adagrad": (torch.optim.Adagrad, {}),
    }
    for name, (cls, expected) in kinds.items():
        optimizer = build_optimizer(model, OptimConfig(name=name, lr=0.01, momentum=0.8))
        assert type(optimizer) is cls
        for key, value in expected.items():
            assert optimizer.param_groups[0][key] == value


def test_weight_decay_skips_biases_and_norm_parameters():
    model = small_model()
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_gradient_free_parameters_are_left_out():
    model = small_model()
    model[0].weight.requires_grad_(False)
    groups = parameter_groups(model, 0.0)
    assert all(p is not model[0].weight for group in groups for p in group["params"])
