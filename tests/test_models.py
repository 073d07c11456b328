"""Architectures: shapes, the paper's layer specs and parameter counts, and the discriminator contract."""

import pytest
import torch
import torch.nn.functional as F
from helpers import raises_one_line
from torch import nn

from stiefel_gan._modules import select_layers
from stiefel_gan.config.schema import ARCHITECTURES, RESNET_IMAGE_SIZES, STANDARD_CNN_IMAGE_SIZES
from stiefel_gan.gan.models import (
    LatentGenerator,
    MLPDiscriminator,
    MLPGenerator,
    ResNetDiscriminator,
    ResNetGenerator,
    StandardCNNDiscriminator,
    StandardCNNGenerator,
    build_models,
)

TINY = {"z_dim": 8, "g_width": 4, "d_width": 4}

IMAGE_CASES = [("standard_cnn", size) for size in STANDARD_CNN_IMAGE_SIZES] + [
    ("resnet", size) for size in RESNET_IMAGE_SIZES
]
ALL_CASES = [(arch, (channels, size, size)) for arch, size in IMAGE_CASES for channels in (1, 3)] + [
    ("mlp", (2,)),
    ("mlp", (5,)),
]
CASE_IDS = [f"{arch}-{'x'.join(map(str, shape))}" for arch, shape in ALL_CASES]


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("arch,data_shape", ALL_CASES, ids=CASE_IDS)
def test_shapes(arch, data_shape):
    G, D = build_models(arch, data_shape, **TINY)
    assert G.z_dim == 8
    z = G.sample_z(3)
    fake = G(z)
    assert fake.shape == (3, *data_shape) and fake.dtype == torch.float32
    if arch != "mlp":  # tanh output
        assert fake.abs().max() <= 1.0
    logits = D(fake)
    assert logits.shape == (3,)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("arch,data_shape", ALL_CASES, ids=CASE_IDS)
def test_gradients_reach_every_parameter(arch, data_shape):
    G, D = build_models(arch, data_shape, **TINY)
    D(G(G.sample_z(4))).sum().backward()
    for module in (G, D):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- the discriminator contract

ALLOWED_LEAVES = (nn.Conv2d, nn.Linear, nn.LeakyReLU, nn.ReLU, nn.AvgPool2d, nn.Identity)


@pytest.mark.parametrize("arch,data_shape", ALL_CASES, ids=CASE_IDS)
def test_discriminator_holds_parameters_only_in_plain_conv_and_linear(arch, data_shape):
    _, D = build_models(arch, data_shape, **TINY)
    assert not list(D.buffers())  # no normalization statistics, no power-iteration vectors
    for name, module in D.named_modules():
        own_parameters = list(module.parameters(recurse=False))
        if own_parameters:
            assert type(module) in (nn.Conv2d, nn.Linear), name
            assert {n for n, _ in module.named_parameters(recurse=False)} == {"weight", "bias"}, name
        if isinstance(module, nn.Conv2d):
            assert module.groups == 1 and module.dilation == (1, 1), name
        if not list(module.children()):
            assert type(module) in ALLOWED_LEAVES, f"{name}: {type(module).__name__}"
    # no weight shared between two layers
    assert len(list(D.named_parameters(remove_duplicate=False))) == len(list(D.parameters()))
    linear_layers = [m for m in D.modules() if type(m) is nn.Linear]
    assert linear_layers[-1].out_features == 1


class _Recorder(nn.Module):
    """Stand-in for a converted layer: calls the original and counts the calls."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.layer(x)


@pytest.mark.parametrize("arch,data_shape", ALL_CASES, ids=CASE_IDS)
def test_discriminator_calls_its_layers_only_as_modules(arch, data_shape):
    """Replacing every Conv2d/Linear (the final dense layer included) by another module type keeps the
    output and routes every layer through exactly one call: what stiefelize and SN rely on."""
    _, D = build_models(arch, data_shape, **TINY)
    x = torch.randn(2, *data_shape)
    before = D(x)
    recorders = []
    for _, layer, attr, parent in select_layers(D, (nn.Conv2d, nn.Linear)):
        recorders.append(_Recorder(layer))
        setattr(parent, attr, recorders[-1])
    assert len(recorders) == sum(1 for m in D.modules() if type(m) in (nn.Conv2d, nn.Linear))
    torch.testing.assert_close(D(x), before, rtol=0, atol=0)
    assert [r.calls for r in recorders] == [1] * len(recorders)


# ---------------------------------------------------------------- the paper's specifications


def _conv_specs(module):
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        for m in module.modules()
        if type(m) is nn.Conv2d
    ]


def test_standard_cnn_discriminator_matches_table_3():
    D = StandardCNNDiscriminator(image_size=32, channels=3, width=64)
    # Miyato et al. 2018, Table 3: (in, out, kernel, stride, padding)
    assert _conv_specs(D) == [
        (3, 64, 3, 1, 1),
        (64, 64, 4, 2, 1),
        (64, 128, 3, 1, 1),
        (128, 128, 4, 2, 1),
        (128, 256, 3, 1, 1),
        (256, 256, 4, 2, 1),
        (256, 512, 3, 1, 1),
    ]
    assert (D.fc.in_features, D.fc.out_features) == (4 * 4 * 512, 1)
    slopes = [m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.1] * 7
    assert StandardCNNDiscriminator(image_size=48).fc.in_features == 6 * 6 * 512
    assert StandardCNNDiscriminator(image_size=16, width=8).fc.in_features == 2 * 2 * 64


def test_standard_cnn_generator_matches_table_3():
    G = StandardCNNGenerator(z_dim=128, image_size=32, channels=3, width=64)
    assert (G.dense[0].in_features, G.dense[0].out_features) == (128, 4 * 4 * 512)
    deconvs = [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0])
        for m in G.modules()
        if type(m) is nn.ConvTranspose2d
    ]
    assert deconvs == [(512, 256, 4, 2), (256, 128, 4, 2), (128, 64, 4, 2)]
    assert _conv_specs(G) == [(64, 3, 3, 1, 1)]
    assert StandardCNNGenerator(image_size=48).dense[0].out_features == 6 * 6 * 512


def test_parameter_counts_by_hand():
    # standard CNN D, 32 px, width 64: (c_in * c_out * k * k + c_out) per conv, then the dense layer
    standard_d = (
        (3 * 64 * 9 + 64) + (64 * 64 * 16 + 64)  # 1_792 + 65_600
        + (64 * 128 * 9 + 128) + (128 * 128 * 16 + 128)  # 73_856 + 262_272
        + (128 * 256 * 9 + 256) + (256 * 256 * 16 + 256)  # 295_168 + 1_048_832
        + (256 * 512 * 9 + 512)  # 1_180_160
        + (4 * 4 * 512 + 1)  # 8_193
    )  # fmt: skip
    assert standard_d == 2_935_873
    assert _count(StandardCNNDiscriminator(image_size=32, channels=3, width=64)) == 2_935_873
    # standard CNN G: dense 128 -> 8192 with BN over its 8192 features, deconvs with BN, conv3 -> 3
    assert _count(StandardCNNGenerator(z_dim=128, image_size=32, channels=3, width=64)) == (
        (128 * 8192 + 8192) + 2 * 8192
        + (512 * 256 * 16 + 256) + 2 * 256
        + (256 * 128 * 16 + 128) + 2 * 128
        + (128 * 64 * 16 + 64) + 2 * 64
        + (64 * 3 * 9 + 3)
    ) == 3_828_739  # fmt: skip
    # ResNet D, 32 px, width 128: optimized block (conv3 3->128, conv3, 1x1 shortcut), a downsampling
    # block (two conv3 and a 1x1 shortcut), two plain blocks (two conv3 each, identity shortcut), dense
    conv3 = 128 * 128 * 9 + 128
    assert _count(ResNetDiscriminator(image_size=32, channels=3, width=128)) == (
        (3 * 128 * 9 + 128) + conv3 + (3 * 128 + 128)
        + 2 * conv3 + (128 * 128 + 128)
        + 4 * conv3
        + (128 + 1)
    ) == 1_053_825  # fmt: skip
    # ResNet G, 32 px, width 256: dense 128 -> 4*4*256, three up blocks (BN, conv3, BN, conv3, 1x1), BN, conv3
    up_block = 2 * 256 + (256 * 256 * 9 + 256) + 2 * 256 + (256 * 256 * 9 + 256) + (256 * 256 + 256)
    assert _count(ResNetGenerator(z_dim=128, image_size=32, channels=3, width=256)) == (
        (128 * 4096 + 4096) + 3 * up_block + 2 * 256 + (256 * 3 * 9 + 3)
    ) == 4_276_739  # fmt: skip


def test_resnet_specs_match_tables_4_and_5():
    def blocks(D):
        return [
            (type(block).__name__, _conv_specs(block), type(block.pool).__name__ if hasattr(block, "pool") else None)
            for block in D.blocks
        ]

    cifar = ResNetDiscriminator(image_size=32, channels=3, width=128)
    w = 128
    assert [specs for _, specs, _ in blocks(cifar)] == [
        [(3, w, 3, 1, 1), (w, w, 3, 1, 1), (3, w, 1, 1, 0)],
        [(w, w, 3, 1, 1), (w, w, 3, 1, 1), (w, w, 1, 1, 0)],
        [(w, w, 3, 1, 1), (w, w, 3, 1, 1)],  # identity shortcut
        [(w, w, 3, 1, 1), (w, w, 3, 1, 1)],
    ]
    assert [pool for _, _, pool in blocks(cifar)] == ["AvgPool2d", "AvgPool2d", "Identity", "Identity"]
    assert cifar.fc.in_features == 128

    stl = ResNetDiscriminator(image_size=48, channels=3, width=128)
    # Table 5: ResBlock down 64, 128, 256, 512, ResBlock 1024; hidden width = input width
    assert [specs for _, specs, _ in blocks(stl)] == [
        [(3, 64, 3, 1, 1), (64, 64, 3, 1, 1), (3, 64, 1, 1, 0)],
        [(64, 64, 3, 1, 1), (64, 128, 3, 1, 1), (64, 128, 1, 1, 0)],
        [(128, 128, 3, 1, 1), (128, 256, 3, 1, 1), (128, 256, 1, 1, 0)],
        [(256, 256, 3, 1, 1), (256, 512, 3, 1, 1), (256, 512, 1, 1, 0)],
        [(512, 512, 3, 1, 1), (512, 1024, 3, 1, 1), (512, 1024, 1, 1, 0)],
    ]
    assert [pool for _, _, pool in blocks(stl)] == ["AvgPool2d"] * 4 + ["Identity"]
    assert stl.fc.in_features == 1024

    g_cifar = ResNetGenerator(image_size=32, width=256)
    assert g_cifar.dense.out_features == 4 * 4 * 256
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in g_cifar.blocks] == [(256, 256)] * 3
    g_stl = ResNetGenerator(image_size=48, width=256)
    assert g_stl.dense.out_features == 6 * 6 * 512
    assert [(b.conv1.in_channels, b.conv2.out_channels) for b in g_stl.blocks] == [(512, 256), (256, 128), (128, 64)]
    assert g_stl.conv_out.in_channels == 64


def _reference_resnet_discriminator(D: ResNetDiscriminator, x: torch.Tensor) -> torch.Tensor:
    """SN-GAN discriminator written with functional ops from the paper's description, on D's weights.

    Shortcuts here convolve *then* pool (the order of the SN-GAN description); the model pools first.
    """

    def conv(layer, h):
        return F.conv2d(h, layer.weight, layer.bias, padding=layer.padding)

    first, *rest = D.blocks
    h = F.avg_pool2d(conv(first.conv2, F.relu(conv(first.conv1, x))), 2)
    h = h + conv(first.shortcut, F.avg_pool2d(x, 2))
    for block in rest:
        downsample = isinstance(block.pool, nn.AvgPool2d)
        residual = conv(block.conv2, F.relu(conv(block.conv1, F.relu(h))))
        shortcut = conv(block.shortcut, h) if isinstance(block.shortcut, nn.Conv2d) else h
        if downsample:
            residual, shortcut = F.avg_pool2d(residual, 2), F.avg_pool2d(shortcut, 2)
        h = residual + shortcut
    features = F.relu(h).sum(dim=(2, 3))
    return (features @ D.fc.weight.T + D.fc.bias).squeeze(1)


@pytest.mark.parametrize("image_size", RESNET_IMAGE_SIZES)
def test_resnet_discriminator_matches_functional_reference(image_size):
    D = ResNetDiscriminator(image_size=image_size, channels=3, width=4).double()
    x = torch.randn(3, 3, image_size, image_size, dtype=torch.float64)
    torch.testing.assert_close(D(x), _reference_resnet_discriminator(D, x), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- latent sampling


@pytest.mark.parametrize("seed", [0, 7])
def test_sample_z_reproducible_and_standard_normal(seed):
    G = MLPGenerator(z_dim=5)
    z = G.sample_z(4, generator=torch.Generator().manual_seed(seed))
    expected = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(z, expected, rtol=0, atol=0)
    assert z.device == next(G.parameters()).device
    big = G.sample_z(20_000, generator=torch.Generator().manual_seed(seed))
    assert big.mean().abs() < 0.02 and (big.std() - 1).abs() < 0.02


def test_sample_z_follows_model_dtype():
    G = StandardCNNGenerator(z_dim=6, image_size=16, width=2).double()
    assert G.sample_z(2).dtype == torch.float64
    assert G(G.sample_z(2)).dtype == torch.float64


@pytest.mark.parametrize("G", [MLPGenerator(), StandardCNNGenerator(width=2), ResNetGenerator(width=4)])
def test_every_generator_is_a_latent_generator(G):
    assert isinstance(G, LatentGenerator) and G.sample_z(2).shape == (2, G.z_dim)


# ---------------------------------------------------------------- bad input


def test_build_models_rejects_bad_arch_and_shapes():
    raises_one_line(lambda: build_models("dcgan", (3, 32, 32)), "'dcgan'", *ARCHITECTURES)
    raises_one_line(lambda: build_models("mlp", (3, 32, 32)), "(3, 32, 32)", "(dim,)")
    raises_one_line(lambda: build_models("standard_cnn", (2,)), "(2,)", "(16, 32, 48)")
    raises_one_line(lambda: build_models("standard_cnn", (3, 64, 64)), "(3, 64, 64)", "(16, 32, 48)")
    raises_one_line(lambda: build_models("standard_cnn", (3, 32, 16)), "(3, 32, 16)")
    raises_one_line(lambda: build_models("resnet", (3, 16, 16)), "(3, 16, 16)", "(32, 48)")
    raises_one_line(lambda: build_models("resnet", (0, 32, 32)), "(0, 32, 32)")
    raises_one_line(lambda: build_models("mlp", 2), "data_shape=2")
    raises_one_line(lambda: build_models("mlp", ()), "data_shape=()")


def test_constructors_reject_bad_sizes_and_widths():
    raises_one_line(lambda: StandardCNNGenerator(image_size=28), "image_size=28", "(16, 32, 48)")
    raises_one_line(lambda: StandardCNNDiscriminator(image_size=64), "image_size=64", "(16, 32, 48)")
    raises_one_line(lambda: ResNetGenerator(image_size=16), "image_size=16", "(32, 48)")
    raises_one_line(lambda: ResNetDiscriminator(image_size=64), "image_size=64", "(32, 48)")
    raises_one_line(lambda: ResNetGenerator(image_size=48, width=6), "width=6", "multiple of 4")
    raises_one_line(lambda: ResNetDiscriminator(image_size=48, width=3), "width=3", "multiple of 2")
    raises_one_line(lambda: StandardCNNDiscriminator(width=0), "width=0")
    raises_one_line(lambda: StandardCNNGenerator(z_dim=2.5), "z_dim=2.5")
    raises_one_line(lambda: MLPDiscriminator(depth=0), "depth=0")
    raises_one_line(lambda: MLPGenerator(hidden=True), "hidden=True")


def test_forward_rejects_wrong_input_shapes():
    G, D = build_models("standard_cnn", (3, 16, 16), **TINY)
    raises_one_line(lambda: D(torch.zeros(2, 3, 32, 32)), "(2, 3, 32, 32)", "(B, 3, 16, 16)")
    raises_one_line(lambda: D(torch.zeros(3, 16, 16)), "(3, 16, 16)")
    raises_one_line(lambda: G(torch.zeros(2, 9)), "(2, 9)", "(B, 8)")
    _, D_mlp = build_models("mlp", (2,), **TINY)
    raises_one_line(lambda: D_mlp(torch.zeros(4, 3)), "(4, 3)", "(B, 2)")
    raises_one_line(lambda: G.sample_z(0), "n=0")
