import pytest
import torch
from torch import nn

from trainlab.config import OptimConfig
from trainlab.engine import optim
from trainlab.engine.optim import OPTIMIZERS, build_optimizer, parameter_groups, use_fused


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


def test_settings_the_optimizer_does_not_use_are_named():
    assert OptimConfig(name="sgd", momentum=0.5).ignored() == ["momentum"]
    assert OptimConfig(name="rmsprop", betas=(0.8, 0.99)).ignored() == ["betas"]
    assert OptimConfig(name="sgd").ignored() == []  # defaults: a saved config.yaml has them
    assert OptimConfig(name="momentum", momentum=0.5, betas=(0.8, 0.99)).ignored() == ["betas"]


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


class FakeParameter:
    """What use_fused reads of a parameter, for machines without CUDA."""

    def __init__(self, cuda: bool = True, floating: bool = True) -> None:
        self.is_cuda, self.floating = cuda, floating

    def is_floating_point(self) -> bool:
        return self.floating


@pytest.mark.parametrize(
    ("name", "fused"),
    [
        ("sgd", True),
        ("momentum", True),
        ("nesterov", True),
        ("adam", True),
        ("adamw", True),
        ("rmsprop", False),
        ("adagrad", False),
    ],
)
def test_fused_updates_where_torch_has_a_cuda_kernel(name, fused):
    assert use_fused(name, [FakeParameter(), FakeParameter()]) is fused


def test_no_fused_update_off_cuda_or_for_integer_parameters():
    assert not use_fused("adamw", [FakeParameter(), FakeParameter(cuda=False)])
    assert not use_fused("adamw", [FakeParameter(floating=False)])
    assert not use_fused("adamw", [])
    for name in OPTIMIZERS:  # a CPU model: torch's default per-tensor update
        optimizer = build_optimizer(small_model(), OptimConfig(name=name))
        assert not optimizer.defaults.get("fused")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["momentum", "adamw"])
def test_a_fused_cuda_step_is_the_per_tensor_step(name, monkeypatch):
    # Not small_model: its conv bias before batch norm has a zero gradient up to rounding,
    # which Adam scales up to whole steps of either sign (fused or not, the runs then differ).
    def linear_model() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).cuda()

    torch.manual_seed(0)
    fused_model, plain_model = linear_model(), linear_model()
    plain_model.load_state_dict(fused_model.state_dict())
    config = OptimConfig(name=name, lr=0.01, weight_decay=1e-3)
    fused = build_optimizer(fused_model, config)
    monkeypatch.setattr(optim, "use_fused", lambda *_: False)
    plain = build_optimizer(plain_model, config)
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    x, y = torch.randn(32, 1, 8, 8, device="cuda"), torch.randint(0, 3, (32,), device="cuda")
    for _ in range(5):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
