import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fedpriv.config import Model
from fedpriv.tasks import build_model
from fedpriv.tasks.models import TanhCNN


def per_example_grads(model, x, y):
    """Reference: one backward pass per example."""
    grads = []
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
    model.zero_grad()
    return grads


def three_examples():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 784, generator=g), torch.tensor([0, 3, 7])


def test_the_28x28_cnn_is_papernots_tanh_net_with_group_norm():
    model = build_model(Model.CNN, num_features=784, num_classes=10, seed=0)
    assert isinstance(model, TanhCNN)
    kinds = {type(m) for m in model.modules()}
    assert nn.Tanh in kinds and nn.GroupNorm in kinds
    assert not kinds & {nn.ReLU, nn.BatchNorm1d, nn.BatchNorm2d}
    # 1,040 + 8,224 (convs) + 96 (group norms) + 16,416 + 330 (dense).
    assert sum(p.numel() for p in model.parameters()) == 26_106
    x = torch.rand(2, 784)
    torch.testing.assert_close(model(x), model(x.view(2, 1, 28, 28)))


def test_cnn_refuses_other_image_sizes():
    with pytest.raises(ValueError, match=r"8x8 \(64 features\) or 28x28 \(784\).* got 100"):
        build_model(Model.CNN, num_features=100, num_classes=10, seed=0)


def test_opacus_per_sample_gradients_match_one_pass_per_example():
    from opacus.grad_sample import GradSampleModule
    from opacus.validators import ModuleValidator

    model = build_model(Model.CNN, num_features=784, num_classes=10, seed=0)
    assert ModuleValidator.validate(model, strict=False) == []
    x, y = three_examples()
    expected = per_example_grads(model, x, y)
    gsm = GradSampleModule(model)  # hooks, loss_reduction="mean": as DP-SGD uses them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F.cross_entropy(gsm(x), y).backward()
    for j, p in enumerate(model.parameters()):
        assert p.grad_sample.shape == (3, *p.shape)
        for i in range(3):
            torch.testing.assert_close(p.grad_sample[i], expected[i][j], rtol=1e-4, atol=1e-5)
    gsm._close()


def test_ghost_clipping_norms_match_one_pass_per_example():
    # client/privacy.py's default record-level path: Opacus' fast gradient clipping, which
    # needs each example's gradient norm (conv and group norm through their samplers).
    from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
        GradSampleModuleFastGradientClipping,
    )

    model = build_model(Model.CNN, num_features=784, num_classes=10, seed=0)
    x, y = three_examples()
    expected = torch.stack([torch.sqrt(sum((g ** 2).sum() for g in grads))
                            for grads in per_example_grads(model, x, y)])
    gsm = GradSampleModuleFastGradientClipping(model, max_grad_norm=1.0,
                                               use_ghost_clipping=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        F.cross_entropy(gsm(x), y).backward()
    torch.testing.assert_close(gsm.get_norm_sample(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gsm.get_clipping_coef(), (1.0 / (expected + 1e-6)).clamp(max=1))


def test_scatternet_trains_only_its_linear_layer_on_group_normed_coefficients():
    from fedpriv.tasks import ScatterNetLinear

    model = build_model(Model.SCATTERNET, num_features=784, num_classes=10, seed=0)
    assert isinstance(model, ScatterNetLinear)
    # Tramer & Boneh's ScatterLinear: 81 x 7 x 7 coefficients, group norm over 27 groups
    # without affine parameters, one linear layer: 3,969 x 10 + 10 parameters, all of the
    # state (the filters are not saved).
    assert model.norm.num_groups == 27 and not model.norm.affine
    assert sum(p.numel() for p in model.parameters()) == 39_700
    assert set(model.state_dict()) == {"head.weight", "head.bias"}
    x = torch.rand(4, 784)
    coefficients = model.scatter(x)
    assert coefficients.shape == (4, 81, 7, 7) and not coefficients.requires_grad
    torch.testing.assert_close(model(x), model(coefficients))
    torch.testing.assert_close(model(x), model(x.view(4, 1, 28, 28)))
    # the same seed, the same weights; another seed, others
    again = build_model(Model.SCATTERNET, num_features=784, num_classes=10, seed=0)
    other = build_model(Model.SCATTERNET, num_features=784, num_classes=10, seed=1)
    assert torch.equal(model.head.weight, again.head.weight)
    assert not torch.equal(model.head.weight, other.head.weight)


def test_scatternet_refuses_other_image_sizes():
    with pytest.raises(ValueError, match=r"28x28 images \(784 features\), got 64"):
        build_model(Model.SCATTERNET, num_features=64, num_classes=10, seed=0)
