"""Reusing the Stiefel layers in any model: every conv kind, groups, torchvision models, checkpoints,
third-party code that walks a model by type, DDP and torch.compile.

Spectra are checked against explicit dense operator matrices (the layer applied to every basis
input) and per-group dense SVDs; the FLOP count against torch's own FLOP counter."""

import copy
import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from helpers import raises_one_line
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from stiefel_gan.manifold import (
    FixedCurve,
    LearnableCurve,
    LearnableGrid,
    StiefelConv1d,
    StiefelConv2d,
    StiefelConv3d,
    StiefelConvTranspose1d,
    StiefelConvTranspose2d,
    StiefelConvTranspose3d,
    StiefelLayer,
    StiefelLinear,
    factor_costs,
    haar_,
    make_optimizer,
    manifold_drift,
    optimizer_step_flops,
    stiefel_layers,
    stiefel_summary,
    stiefelize,
)
from stiefel_gan.manifold.retractions import _householder_q_factor

# (Stiefel class, torch class, spatial dims, kernel size)
KINDS = [
    (StiefelConv1d, nn.Conv1d, 1, 3), (StiefelConv2d, nn.Conv2d, 2, 3), (StiefelConv3d, nn.Conv3d, 3, 2),
    (StiefelConvTranspose1d, nn.ConvTranspose1d, 1, 3), (StiefelConvTranspose2d, nn.ConvTranspose2d, 2, 3),
    (StiefelConvTranspose3d, nn.ConvTranspose3d, 3, 2),
]
# (c_in, c_out, groups): one group, grouped, depthwise with multiplier 2, pure depthwise (k = 1)
GROUPINGS = [(4, 6, 1), (4, 6, 2), (3, 6, 3), (4, 4, 4)]


def _is_transposed(layer) -> bool:
    return isinstance(layer, nn.modules.conv._ConvTransposeNd)


def explicit_operator(layer) -> torch.Tensor:
    """The dense matrix of the layer (without bias) on the input size where it is one reshaped kernel.

    A conv on a kernel-sized input without padding produces one output position: the map from the
    ``c_in K`` inputs to the ``c_out`` outputs. A transposed conv on a one-position input produces a
    kernel-sized output: the map from ``c_in`` inputs to ``c_out K`` outputs. Each column is the
    layer applied to one basis input.
    """
    kernel = layer.kernel_size
    spatial = (1,) * len(kernel) if _is_transposed(layer) else tuple(kernel)
    n_inputs = layer.in_channels * torch.Size(spatial).numel()
    basis = torch.eye(n_inputs, dtype=torch.float64).reshape(n_inputs, layer.in_channels, *spatial)
    linear_part = copy.deepcopy(layer).double()
    with torch.no_grad():
        linear_part.bias.zero_()
        outputs = linear_part(basis)
    return outputs.reshape(n_inputs, -1).T


def expected_singular_values(layer) -> torch.Tensor:
    """``lambda`` repeated once per group, descending: the spectrum of the block-diagonal operator."""
    lam = layer.singular_values().double().abs()
    return torch.sort(lam.repeat(layer.groups), descending=True).values


def make_conv(kind, grouping, factorization, dtype=torch.float64):
    cls, _, _, kernel = kind
    c_in, c_out, groups = grouping
    spectrum = LearnableGrid(init=FixedCurve(tau=0.6, eps=0.2, sigma=1.3))
    return cls(c_in, c_out, kernel, groups=groups, factorization=factorization, spectrum=spectrum, dtype=dtype)


def conv_input(layer, dtype=torch.float64):
    return torch.randn(3, layer.in_channels, *(5,) * len(layer.kernel_size), dtype=dtype)


def grouped_blocks(layer) -> torch.Tensor:
    """The weight as ``groups x rows x cols``: rows are the first dimension of the stored kernel."""
    groups = layer.parametrization.groups
    return layer.weight.detach().reshape(groups, layer.weight.shape[0] // groups, -1)


@pytest.mark.parametrize("factorization", ["diag", "svd"])
@pytest.mark.parametrize("grouping", GROUPINGS, ids=lambda g: f"in{g[0]}-out{g[1]}-g{g[2]}")
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k[0].__name__)
def test_conv_spectra_equal_lambda_against_explicit_operator_and_per_group_svd(kind, grouping, factorization):
    torch.manual_seed(0)
    layer = make_conv(kind, grouping, factorization)
    assert isinstance(layer, kind[1]) and isinstance(layer, StiefelLayer)
    reference = kind[1](*grouping[:2], kind[3], groups=grouping[2], dtype=torch.float64)
    assert layer.weight.shape == reference.weight.shape

    def check():
        operator = explicit_operator(layer)
        torch.testing.assert_close(torch.linalg.svdvals(operator), expected_singular_values(layer),
                                   rtol=1e-5, atol=1e-5)
        lam = torch.sort(layer.singular_values().double(), descending=True).values
        for block in grouped_blocks(layer):  # each group's dense SVD
            torch.testing.assert_close(torch.linalg.svdvals(block), lam, rtol=1e-5, atol=1e-5)
        assert layer.parametrization.drift() < 1e-5

    check()
    # one batched factor for all groups, on the manifold, moved by geoopt's RiemannianAdam
    factors = layer.parametrization.stiefel_factors()
    if grouping[2] > 1:
        assert all(f.dim() == 3 and f.shape[0] == grouping[2] for f in factors)
    optimizer = make_optimizer(layer, "radam", lr=5e-2)
    x = conv_input(layer)
    target = torch.randn_like(layer(x))
    before = layer.weight.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.mse_loss(layer(x), target).backward()
        optimizer.step()
    assert not torch.allclose(layer.weight.detach(), before)
    check()
    # the output is the torch layer's own forward with the effective weight
    reference.load_state_dict({"weight": layer.weight.detach(), "bias": layer.bias.detach()})
    torch.testing.assert_close(layer(x), reference(x))


def test_depthwise_filters_have_norm_sigma():
    # groups = c_in with one output channel per group: each group is a 1 x K row, k = 1, lambda = [sigma]
    layer = StiefelConv2d(5, 5, 3, groups=5, spectrum=FixedCurve(sigma=0.7))
    assert layer.parametrization.k == 1
    norms = layer.weight.detach().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((5,), 0.7))


def test_every_layer_kind_is_an_instance_of_the_torch_layer_it_replaces():
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Conv2d(2, 4, 3), nn.Conv3d(2, 4, 2), nn.ConvTranspose1d(2, 4, 3),
                          nn.ConvTranspose2d(2, 4, 3), nn.ConvTranspose3d(2, 4, 2), nn.Linear(3, 5))
    torch_types = [type(m) for m in model]
    stiefelize(model)
    for layer, torch_type in zip(model, torch_types):
        assert isinstance(layer, torch_type) and isinstance(layer, StiefelLayer)
        assert type(layer).__name__ == "Stiefel" + torch_type.__name__


def test_torch_flop_counter_and_init_loops_see_the_converted_layers():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=4), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    converted = stiefelize(copy.deepcopy(plain))
    x = torch.randn(2, 3, 6, 6)
    counts = []
    for model in (plain, converted):
        with FlopCounterMode(display=False) as counter:
            model(x)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0  # same convolutions and matmuls; lambda X is elementwise
    # a torchvision-style init loop finds every layer; it writes into the computed weight, which is
    # recomputed from the factors at the next read (the constraint cannot be broken this way)
    weights = [m.weight.detach().clone() for m in converted if isinstance(m, (nn.Conv2d, nn.Linear))]
    found = 0
    for m in converted.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            found += 1
    assert found == 3
    for m, w in zip([m for m in converted if isinstance(m, (nn.Conv2d, nn.Linear))], weights):
        assert torch.equal(m.weight, w)


def test_optimizer_step_flops_matches_torch_flop_counter():
    # torch's counter sees the GEMMs (projections, Gram matrix) but not the Cholesky (p^3 / 3) and the
    # triangular solve (n p^2): the formula minus those two terms, on a step with momentum (the second)
    n, p = 300, 20
    layer = StiefelLinear(n, p, bias=False)
    optimizer = make_optimizer(layer, "radam", lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        layer(torch.randn(4, n)).square().sum().backward()
        if optimizer.state:
            with FlopCounterMode(display=False) as counter:
                optimizer.step()
        else:
            optimizer.step()
    untracked = n * p * p + p ** 3 // 3
    assert counter.get_total_flops() == pytest.approx(optimizer_step_flops(n, p, "qr") - untracked, rel=0.01)


def test_summary_lists_every_layer_and_the_large_dense_factor_dominates():
    model = stiefelize(nn.Sequential(nn.Conv2d(3, 16, 3, groups=1), nn.Conv2d(16, 16, 3, groups=16), nn.Flatten(),
                                     nn.Linear(2048, 256)), from_weight=False)
    costs = factor_costs(model)
    assert [c.name for c in costs] == ["0", "1", "3"]
    depthwise = costs[1]
    assert depthwise.groups == 16 and depthwise.factor_shapes == ((16, 9, 1),) and depthwise.k == 1
    assert costs[2].factor_shapes == ((2048, 256),) and costs[2].step_flops == optimizer_step_flops(2048, 256)
    assert costs[2].step_flops > 100 * (costs[0].step_flops + costs[1].step_flops)
    text = stiefel_summary(model)
    assert "2048x256" in text and "16x9x1" in text and len(text.splitlines()) == 5


def test_haar_init_is_householder_qr_of_the_same_gaussian():
    # Mezzadri's definition: Q of a Gaussian's QR with a positive diagonal of R; batched over groups
    for shape in [(3, 40, 6), (12, 12), (9, 2)]:
        torch.manual_seed(1)
        factor = haar_(torch.empty(shape))
        torch.manual_seed(1)
        reference = _householder_q_factor(torch.randn(shape))
        torch.testing.assert_close(factor, reference, rtol=1e-5, atol=1e-5)
        assert manifold_drift(factor) < 1e-5


def test_plain_checkpoint_initializes_factors_and_strictness_is_documented():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.Flatten(), nn.Linear(6, 3))
    converted = stiefelize(copy.deepcopy(plain), spectrum=FixedCurve(tau=2.0), factorization="svd",
                           from_weight=False)
    assert set(converted.state_dict()) == {
        "0.parametrization.left", "0.parametrization.right", "0.parametrization.spectrum.tau",
        "0.parametrization.spectrum.eps", "0.parametrization.spectrum.sigma", "0.bias",
        "2.parametrization.left", "2.parametrization.right", "2.parametrization.spectrum.tau",
        "2.parametrization.spectrum.eps", "2.parametrization.spectrum.sigma", "2.bias"}
    converted.load_state_dict(plain.state_dict(), strict=True)
    # svd factorization keeps the plain weight's singular vectors per group: U_g diag(lambda) V_g^T
    blocks = plain[0].weight.detach().double().reshape(2, 3, 18)
    u, _, vh = torch.linalg.svd(blocks, full_matrices=False)
    lam = converted[0].singular_values().double()
    expected = (u * lam) @ vh
    torch.testing.assert_close(grouped_blocks(converted[0]).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(converted[0].bias, plain[0].bias)
    with pytest.raises(RuntimeError, match="Unexpected key"):  # a Stiefel checkpoint is not a plain one
        copy.deepcopy(plain).load_state_dict(converted.state_dict())
    bad = plain.state_dict() | {"0.weight": torch.zeros(6, 2, 2, 2)}
    with pytest.raises(RuntimeError, match="0.weight: a weight of shape"):
        converted.load_state_dict(bad)


def test_from_weight_polar_factor_in_float32_equals_float64():
    torch.manual_seed(0)
    plain = nn.Linear(40, 12)
    layer = stiefelize(nn.Sequential(copy.deepcopy(plain)))[0]
    u, _, vh = torch.linalg.svd(plain.weight.detach().double(), full_matrices=False)
    lam = layer.singular_values().double()
    torch.testing.assert_close(layer.weight.detach().double(), lam[:, None] * (u @ vh), rtol=1e-5, atol=1e-5)
    assert layer.parametrization.factor.dtype == torch.float32


@pytest.mark.parametrize("factorization", ["diag", "svd"])
def test_rank_deficient_weight_falls_back_to_svd_and_lands_on_the_manifold(factorization):
    # the Gram matrix of a rank-2 weight is singular: its eigh-based factors are not orthonormal
    torch.manual_seed(0)
    plain = nn.Linear(9, 6)
    with torch.no_grad():
        plain.weight.copy_(torch.randn(6, 2) @ torch.randn(2, 9))
    layer = stiefelize(nn.Sequential(plain), factorization=factorization)[0]
    assert layer.parametrization.drift() < 1e-5
    lam = torch.sort(layer.singular_values(), descending=True).values
    torch.testing.assert_close(torch.linalg.svdvals(layer.weight.detach()), lam, rtol=1e-5, atol=1e-5)
    # the top two singular directions of the weight are kept by U diag(lambda) V^T
    if factorization == "svd":
        u, _, _ = torch.linalg.svd(plain.weight.detach().double())
        kept = layer.parametrization.left.detach().double()[:, :2]
        torch.testing.assert_close((u[:, :2].T @ kept).abs(), torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-5)


def test_include_exclude_and_shared_layers():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), shared, nn.ReLU(), shared, nn.Linear(4, 2))
    stiefelize(model, include=["0", "2", "4"], exclude="0")
    assert type(model[0]) is nn.Conv2d and type(model[5]) is nn.Linear
    assert isinstance(model[2], StiefelLinear) and model[2] is model[4]  # one twin for a shared layer


def _bad_spectrum_model():
    return nn.Sequential(nn.Linear(8, 3), nn.Linear(3, 2))  # k = 3, then k = 2


@pytest.mark.parametrize("call,named", [
    (lambda m: stiefelize(m, include="layer*"), "include pattern 'layer*'"),
    (lambda m: stiefelize(m, exclude=["0", "fc"]), "exclude pattern 'fc'"),
    (lambda m: stiefelize(m, spectrum=LearnableGrid(init=[1.0, 0.5, 0.2])), "layer '1' (Linear)"),
    (lambda m: stiefelize(m, include=3), "include=3"),
])
def test_stiefelize_bad_input_is_one_line_and_leaves_the_model_untouched(call, named):
    model = _bad_spectrum_model()
    raises_one_line(lambda: call(model), named, "allowed")
    assert not list(stiefel_layers(model))


def test_layers_without_a_twin_warn_or_refuse_with_strict():
    model = nn.Sequential()
    model.add_module("attention", nn.MultiheadAttention(8, 2))
    model.add_module("bilinear", nn.Bilinear(3, 3, 2))
    model.add_module("fc", nn.Linear(8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stiefelize(copy.deepcopy(model))
    messages = sorted(str(w.message) for w in caught)
    assert messages == ["layer 'attention' (MultiheadAttention) has no Stiefel twin: left as is",
                        "layer 'bilinear' (Bilinear) has no Stiefel twin: left as is"]
    with pytest.raises(ValueError, match="layer 'attention' .* strict=True does not allow it"):
        stiefelize(model, strict=True)
    assert not list(stiefel_layers(model))


# The ten torchvision classifiers of the issue. The conversion and step of the full-size models is
# benchmarks/convert.py; here the three with the largest factors (vgg11's 25088 x 4096 classifier and
# 4608 x 512 convs, vit_b_16 and convnext_tiny's MLPs: minutes of O(n p^2) work on one core) convert
# layers of every kind they have but not every repetition of them.
TORCHVISION = {
    "resnet18": {}, "densenet121": {}, "squeezenet1_0": {}, "mobilenet_v3_small": {}, "efficientnet_b0": {},
    "shufflenet_v2_x0_5": {}, "regnet_y_400mf": {},
    "vgg11": {"exclude": ["features.1[1368]", "classifier.0", "classifier.3"]},
    "vit_b_16": {"include": ["conv_proj", "encoder.layers.encoder_layer_0.*", "heads.*"]},
    "convnext_tiny": {"include": ["features.0.*", "features.1.*", "features.2.*", "classifier.*"]},
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_model_converts_trains_one_step_and_stays_exact(name):
    torch.manual_seed(0)
    options = {"image_size": 32} if name == "vit_b_16" else {}
    model = getattr(torchvision.models, name)(weights=None, num_classes=10, **options)
    x = torch.randn(2, 3, 32, 32)
    expected_shape = model.eval()(x).shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vit_b_16's attention input projections have no twin
        stiefelize(model.train(), spectrum=LearnableCurve(tau=0.5), from_weight=False, **TORCHVISION[name])
    layers = dict(stiefel_layers(model))
    assert layers and all(isinstance(l, (nn.Linear, nn.modules.conv._ConvNd)) for l in layers.values())
    assert model.eval()(x).shape == expected_shape
    optimizer = make_optimizer(model.train(), "radam", lr=1e-2)
    before = {n: l.weight.detach().clone() for n, l in layers.items()}
    nn.functional.cross_entropy(model(x), torch.tensor([1, 7])).backward()
    optimizer.step()
    moved = 0
    for layer_name, layer in layers.items():
        assert layer.parametrization.drift() < 1e-5, layer_name
        lam = torch.sort(layer.singular_values(), descending=True).values
        blocks = torch.linalg.svdvals(grouped_blocks(layer))
        torch.testing.assert_close(blocks, lam.expand_as(blocks), rtol=1e-4, atol=1e-5)
        moved += not torch.equal(layer.weight.detach(), before[layer_name])
    assert moved > len(layers) // 2  # layers after a ReLU that saw no gradient may not move


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 3))
    return stiefelize(model, spectrum=LearnableCurve(), from_weight=False)


def batch_for(rank: int, step: int):
    generator = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(4, 2, 6, 6, generator=generator), torch.randint(0, 3, (4,), generator=generator)


DDP_STEPS = 3


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model = nn.parallel.DistributedDataParallel(tiny_model())
        optimizer = make_optimizer(model, "radam", lr=1e-2)
        for step in range(DDP_STEPS):
            optimizer.zero_grad()
            x, y = batch_for(rank, step)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_keep_factors_identical_and_equal_to_one_process_on_the_full_batch(tmp_path):
    # fork: the workers inherit the imported modules instead of importing torch, torchvision and geoopt again
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # reference: DDP averages the gradients of the two ranks' mean losses = the gradient of the
    # mean loss over both batches, on one process
    reference = tiny_model()
    optimizer = make_optimizer(reference, "radam", lr=1e-2)
    for step in range(DDP_STEPS):
        optimizer.zero_grad()
        batches = [batch_for(r, step) for r in range(2)]
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        nn.functional.cross_entropy(reference(x), y).backward()
        optimizer.step()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(states[0][key], value, rtol=1e-5, atol=1e-6)
    loaded = tiny_model()
    loaded.load_state_dict(states[0])
    assert all(layer.parametrization.drift() < 1e-5 for _, layer in stiefel_layers(loaded))


def test_compiled_model_trains_like_eager():
    # the whole model is captured as one graph (fullgraph=True) and differentiated by AOTAutograd;
    # the C++ inductor backend gives the same numbers but compiles for over a minute on 2 cores
    eager, compiled_model = tiny_model(), tiny_model()
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    optimizers = [make_optimizer(m, "radam", lr=1e-2) for m in (eager, compiled_model)]
    for step in range(3):
        x, y = batch_for(0, step)
        outputs = []
        for model, optimizer in zip((eager, compiled), optimizers):
            optimizer.zero_grad()
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
            optimizer.step()
            outputs.append(out.detach())
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(eager.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
