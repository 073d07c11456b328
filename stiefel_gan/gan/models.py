"""Generators and discriminators of the experiments: Miyato et al.'s standard CNN and SN-GAN ResNets, and MLPs.

Architectures follow Miyato et al. 2018 (arXiv 1802.05957), Appendix B: Table 3 (standard CNN),
Table 4 (ResNet, CIFAR-10, 32 px) and Table 5 (ResNet, STL-10, 48 px). The MLPs are for the 2-D
mixtures of Gaussians.

Note [the discriminator contract]
    Every discriminator is built from plain ``nn.Conv2d`` and ``nn.Linear`` layers (the final dense
    layer included), parameter-free activations and average pooling: no normalization layer, no
    ``groups``, no weight shared between layers, no custom layer type. The forward pass only *calls*
    these layers, it never reads ``layer.weight``. That is what lets another piece of code replace each
    layer by a Stiefel-parameterized twin or wrap it with spectral normalization after construction
    (see :func:`stiefel_gan._modules.select_layers`). Generators are unconstrained and use BatchNorm.

Every discriminator returns logits of shape ``(B,)``; every generator has a ``z_dim`` attribute and
:meth:`LatentGenerator.sample_z`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

# the architectures and the image sizes each takes are facts of the config schema, so that a config is
# checked without building a model (stiefel_gan.config.checks)
from ..config.schema import RESNET_IMAGE_SIZES, STANDARD_CNN_IMAGE_SIZES, model_input_problem

#: Slope of the leaky ReLU in the standard CNN discriminator (Miyato et al. 2018, Appendix B).
LEAKY_RELU_SLOPE = 0.1
#: Standard deviation of the DCGAN initialization used for the standard CNN (see its docstrings).
DCGAN_INIT_STD = 0.02


def _require_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed: use a positive integer")


def _require_size(name: str, value: object, allowed: Sequence[int]) -> None:
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported: use one of {tuple(allowed)}")


def _require_multiple(name: str, value: int, factor: int, reason: str) -> None:
    if value % factor:
        raise ValueError(f"{name}={value!r} is not allowed: {reason} needs a multiple of {factor}")


def _check_input(x: Tensor, expected: tuple[int, ...], what: str) -> None:
    """Raise a one-line ``ValueError`` unless ``x`` has shape ``(B, *expected)`` with ``B >= 1``."""
    if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected or x.shape[0] < 1:
        raise ValueError(f"{what} got input of shape {tuple(x.shape)}: expected (B, {', '.join(map(str, expected))})")


def _init_dcgan_(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02^2), biases 0, for every (transposed) convolution and dense layer."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, mean=0.0, std=DCGAN_INIT_STD)
            nn.init.zeros_(layer.bias)


def _init_xavier_(layer: Union[nn.Conv2d, nn.Linear], gain: float) -> None:
    nn.init.xavier_uniform_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)


class LatentGenerator(nn.Module):
    """Base of every generator: maps a latent ``z ~ N(0, I_{z_dim})`` to a sample.

    Parameters
    ----------
    z_dim : int
        Dimension of the latent vector.
    """

    def __init__(self, z_dim: int) -> None:
        _require_positive_int("z_dim", z_dim)
        super().__init__()
        self.z_dim = z_dim

    def sample_z(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> Tensor:
        """Draw ``n`` latent vectors ``z ~ N(0, I)`` of shape ``(n, z_dim)``.

        Parameters
        ----------
        n : int
            Number of vectors, at least 1.
        generator : torch.Generator, optional
            Source of randomness. The draw happens on the generator's own device and is then moved, so
            one seed gives the same latents whatever ``device`` is.
        device : str or torch.device, optional
            Where the result lives; defaults to the device of the model's parameters. The dtype is
            always the parameters' dtype.
        """
        _require_positive_int("n", n)
        reference = next(self.parameters())
        target = reference.device if device is None else torch.device(device)
        draw_device = target if generator is None else generator.device
        z = torch.randn(n, self.z_dim, generator=generator, device=draw_device, dtype=reference.dtype)
        return z.to(target)

    def _check_latent(self, z: Tensor) -> None:
        _check_input(z, (self.z_dim,), type(self).__name__)


# --------------------------------------------------------------------------------------------------
# Standard CNN (Miyato et al. 2018, Table 3)
# --------------------------------------------------------------------------------------------------


class StandardCNNGenerator(LatentGenerator):
    """Miyato et al.'s standard CNN generator (Table 3), scaled by ``width``.

    ``z -> dense (s*s*8w) -> BN, ReLU -> deconv4/2 4w -> deconv4/2 2w -> deconv4/2 w -> conv3 channels
    -> tanh``, each deconvolution followed by BN and ReLU, with ``s = image_size // 8``. ``width=64``
    is the paper's model (dense to 4x4x512 at 32 px, 6x6x512 at 48 px for STL-10).

    The table lists no normalization after the dense layer; the BN + ReLU there follows the DCGAN
    generator of the authors' chainer-gan-lib code, which normalizes each of the ``s*s*8w`` dense
    features separately (a ``BatchNorm1d``). Weights are initialized as in that code, ``N(0, 0.02^2)``,
    with zero biases; BatchNorm keeps PyTorch's default (scale 1, shift 0).

    Parameters
    ----------
    z_dim : int
        Latent dimension (128 in the paper).
    image_size : int
        Output height and width, one of 16, 32, 48.
    channels : int
        Output channels.
    width : int
        ``w`` above; the last hidden layer has ``w`` channels, the first ``8w``.
    """

    def __init__(self, z_dim: int = 128, image_size: int = 32, channels: int = 3, width: int = 64) -> None:
        _require_size("image_size", image_size, STANDARD_CNN_IMAGE_SIZES)
        _require_positive_int("channels", channels)
        _require_positive_int("width", width)
        super().__init__(z_dim)
        self.image_size = image_size
        self.channels = channels
        self.bottom_size = image_size // 8
        self.bottom_channels = 8 * width
        bottom_features = self.bottom_size**2 * self.bottom_channels

        self.dense = nn.Sequential(nn.Linear(z_dim, bottom_features), nn.BatchNorm1d(bottom_features), nn.ReLU())
        upsampling = OrderedDict()
        in_channels = self.bottom_channels
        for index, out_channels in enumerate((4 * width, 2 * width, width), start=1):
            # kernel 4, stride 2, padding 1 doubles the resolution exactly: (n - 1) * 2 - 2 + 4 = 2n
            upsampling[f"deconv{index}"] = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)
            upsampling[f"bn{index}"] = nn.BatchNorm2d(out_channels)
            upsampling[f"relu{index}"] = nn.ReLU()
            in_channels = out_channels
        upsampling["conv_out"] = nn.Conv2d(width, channels, 3, stride=1, padding=1)
        upsampling["tanh"] = nn.Tanh()
        self.upsampling = nn.Sequential(upsampling)
        _init_dcgan_(self)

    def forward(self, z: Tensor) -> Tensor:
        """Map ``z`` of shape ``(B, z_dim)`` to images ``(B, channels, image_size, image_size)`` in ``[-1, 1]``."""
        self._check_latent(z)
        h = self.dense(z).view(z.shape[0], self.bottom_channels, self.bottom_size, self.bottom_size)
        return self.upsampling(h)


class StandardCNNDiscriminator(nn.Module):
    """Miyato et al.'s standard CNN discriminator (Table 3), scaled by ``width``.

    ``conv3 w, conv4/2 w, conv3 2w, conv4/2 2w, conv3 4w, conv4/2 4w, conv3 8w`` (padding 1, each
    followed by ``LeakyReLU(0.1)``), then ``dense -> 1`` on the flattened ``s x s x 8w`` map with
    ``s = image_size // 8``. ``width=64`` is the paper's model (512 channels before the dense layer);
    small widths (8, 16) serve fast CPU runs and tests.

    Layers are named ``features.conv1`` ... ``features.conv7`` and ``fc`` so that layer filters can
    address them. Weights are initialized ``N(0, 0.02^2)`` with zero biases, as in the authors'
    chainer-gan-lib code. See Note [the discriminator contract] in this module.

    Parameters
    ----------
    image_size : int
        Input height and width, one of 16, 32, 48.
    channels : int
        Input channels.
    width : int
        ``w`` above.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 64) -> None:
        _require_size("image_size", image_size, STANDARD_CNN_IMAGE_SIZES)
        _require_positive_int("channels", channels)
        _require_positive_int("width", width)
        super().__init__()
        self.input_shape = (channels, image_size, image_size)
        # (out_channels, kernel, stride): 3x3/1 keeps the size, 4x4/2 with padding 1 halves it
        spec = [
            (width, 3, 1), (width, 4, 2),
            (2 * width, 3, 1), (2 * width, 4, 2),
            (4 * width, 3, 1), (4 * width, 4, 2),
            (8 * width, 3, 1),
        ]  # fmt: skip
        layers = OrderedDict()
        in_channels = channels
        for index, (out_channels, kernel, stride) in enumerate(spec, start=1):
            layers[f"conv{index}"] = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=1)
            layers[f"lrelu{index}"] = nn.LeakyReLU(LEAKY_RELU_SLOPE)
            in_channels = out_channels
        self.features = nn.Sequential(layers)
        self.fc = nn.Linear((image_size // 8) ** 2 * 8 * width, 1)
        _init_dcgan_(self)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape ``(B,)`` for images ``x`` of shape ``(B, channels, image_size, image_size)``."""
        _check_input(x, self.input_shape, type(self).__name__)
        return self.fc(self.features(x).flatten(1)).squeeze(1)


# --------------------------------------------------------------------------------------------------
# SN-GAN ResNets (Miyato et al. 2018, Tables 4 and 5)
# --------------------------------------------------------------------------------------------------

#: Xavier gain of the 3x3 convolutions inside residual branches (they feed a ReLU), as in the SN-GAN code.
RESIDUAL_GAIN = math.sqrt(2.0)


class _GeneratorBlock(nn.Module):
    """``ResBlock up``: ``x -> BN, ReLU, up2, conv3 -> BN, ReLU, conv3`` plus ``up2, conv1x1`` of ``x``.

    Upsampling is nearest-neighbour by 2; the 1x1 shortcut is needed because the resolution (and
    possibly the channels) change. It is applied before upsampling: a 1x1 convolution commutes with
    nearest-neighbour upsampling and is 4x cheaper at the lower resolution.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        _init_xavier_(self.conv1, RESIDUAL_GAIN)
        _init_xavier_(self.conv2, RESIDUAL_GAIN)
        _init_xavier_(self.shortcut, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.upsample(self.relu(self.bn1(x))))
        h = self.conv2(self.relu(self.bn2(h)))
        return h + self.upsample(self.shortcut(x))


class _OptimizedDiscriminatorBlock(nn.Module):
    """First ``ResBlock down`` of the SN-GAN discriminators, acting on the image itself.

    ``x -> conv3, ReLU, conv3, avgpool2`` plus ``avgpool2, conv1x1`` of ``x``: no ReLU before the first
    convolution (it would clip the image), as in Miyato et al.'s code.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        _init_xavier_(self.conv1, RESIDUAL_GAIN)
        _init_xavier_(self.conv2, RESIDUAL_GAIN)
        _init_xavier_(self.shortcut, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.pool(self.conv2(self.relu(self.conv1(x))))
        # average pooling and a 1x1 convolution commute (both linear, one per pixel, one per channel)
        return h + self.shortcut(self.pool(x))


class _DiscriminatorBlock(nn.Module):
    """``ResBlock [down]``: ``x -> ReLU, conv3 (in -> in), ReLU, conv3 (in -> out) [, avgpool2]`` plus a shortcut.

    The hidden width equals the input width (Gulrajani et al. 2017's critic block, kept by the SN-GAN
    code). The shortcut is ``[avgpool2,] conv1x1`` when the channels change or the block downsamples,
    the identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.AvgPool2d(2) if downsample else nn.Identity()
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if downsample or in_channels != out_channels else nn.Identity()
        )
        _init_xavier_(self.conv1, RESIDUAL_GAIN)
        _init_xavier_(self.conv2, RESIDUAL_GAIN)
        if isinstance(self.shortcut, nn.Conv2d):
            _init_xavier_(self.shortcut, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        # ReLU must not act in place: x is read again by the shortcut
        h = self.pool(self.conv2(self.relu2(self.conv1(self.relu1(x)))))
        return h + self.shortcut(self.pool(x))


class ResNetGenerator(LatentGenerator):
    """SN-GAN ResNet generator: Miyato et al. 2018, Table 4 (32 px) and Table 5 (48 px).

    - ``image_size=32`` (CIFAR-10): ``z -> dense 4x4xw -> ResBlock up w (x3) -> BN, ReLU, conv3
      channels, tanh``; the paper's ``w`` is 256.
    - ``image_size=48`` (STL-10): ``z -> dense 6x6x2w -> ResBlock up w, w/2, w/4 -> BN, ReLU, conv3
      channels, tanh``; ``w = 256`` gives the paper's 512 -> 256 -> 128 -> 64, so ``width`` must be a
      multiple of 4.

    Initialization follows the SN-GAN code: Xavier-uniform weights with gain ``sqrt(2)`` for the 3x3
    convolutions of residual branches and gain 1 for shortcuts, the dense input layer and the output
    convolution; zero biases.

    Parameters
    ----------
    z_dim : int
        Latent dimension (128 in the paper).
    image_size : int
        32 or 48; selects the variant.
    channels : int
        Output channels.
    width : int
        ``w`` above.
    """

    def __init__(self, z_dim: int = 128, image_size: int = 32, channels: int = 3, width: int = 256) -> None:
        _require_size("image_size", image_size, RESNET_IMAGE_SIZES)
        _require_positive_int("channels", channels)
        _require_positive_int("width", width)
        if image_size == 48:
            _require_multiple("width", width, 4, "the 48 px ResNet generator (channels 2w, w, w/2, w/4)")
        super().__init__(z_dim)
        self.image_size = image_size
        self.channels = channels
        self.bottom_size = image_size // 8
        if image_size == 32:
            block_channels = [width, width, width, width]
        else:
            block_channels = [2 * width, width, width // 2, width // 4]
        self.bottom_channels = block_channels[0]

        self.dense = nn.Linear(z_dim, self.bottom_size**2 * self.bottom_channels)
        self.blocks = nn.Sequential(
            OrderedDict(
                (f"block{index}", _GeneratorBlock(c_in, c_out))
                for index, (c_in, c_out) in enumerate(zip(block_channels[:-1], block_channels[1:]), start=1)
            )
        )
        self.bn_out = nn.BatchNorm2d(block_channels[-1])
        self.relu = nn.ReLU()
        self.conv_out = nn.Conv2d(block_channels[-1], channels, 3, padding=1)
        _init_xavier_(self.dense, 1.0)
        _init_xavier_(self.conv_out, 1.0)

    def forward(self, z: Tensor) -> Tensor:
        """Map ``z`` of shape ``(B, z_dim)`` to images ``(B, channels, image_size, image_size)`` in ``[-1, 1]``."""
        self._check_latent(z)
        h = self.dense(z).view(z.shape[0], self.bottom_channels, self.bottom_size, self.bottom_size)
        h = self.relu(self.bn_out(self.blocks(h)))
        return torch.tanh(self.conv_out(h))


class ResNetDiscriminator(nn.Module):
    """SN-GAN ResNet discriminator: Miyato et al. 2018, Table 4 (32 px) and Table 5 (48 px).

    - ``image_size=32`` (CIFAR-10): ``ResBlock down w, ResBlock down w, ResBlock w, ResBlock w``
      (32 -> 16 -> 8 -> 8 -> 8); the paper's ``w`` is 128.
    - ``image_size=48`` (STL-10), Table 5: ``ResBlock down w/2, down w, down 2w, down 4w, ResBlock 8w``
      (48 -> 24 -> 12 -> 6 -> 3 -> 3); ``w = 128`` gives the paper's 64, 128, 256, 512, 1024, so
      ``width`` must be even.

    Both end with ``ReLU -> global sum pooling -> dense 1``. The first block is the "optimized" one
    (no ReLU on the image, shortcut ``avgpool, conv1x1``). Later blocks use a 1x1 convolution shortcut
    when they downsample or change the channels, the identity otherwise; their hidden width is their
    input width. Initialization: Xavier-uniform, gain ``sqrt(2)`` on residual 3x3 convolutions, gain 1
    on shortcuts and on the dense layer, zero biases (as in the SN-GAN code).

    Blocks are named ``blocks.block1`` ... and the dense layer ``fc``. See Note [the discriminator
    contract] in this module.

    Parameters
    ----------
    image_size : int
        32 or 48; selects the variant.
    channels : int
        Input channels.
    width : int
        ``w`` above.
    """

    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 128) -> None:
        _require_size("image_size", image_size, RESNET_IMAGE_SIZES)
        _require_positive_int("channels", channels)
        _require_positive_int("width", width)
        if image_size == 48:
            _require_multiple("width", width, 2, "the 48 px ResNet discriminator (first block w/2)")
        super().__init__()
        self.input_shape = (channels, image_size, image_size)
        if image_size == 32:
            blocks = [
                _OptimizedDiscriminatorBlock(channels, width),
                _DiscriminatorBlock(width, width, downsample=True),
                _DiscriminatorBlock(width, width, downsample=False),
                _DiscriminatorBlock(width, width, downsample=False),
            ]
            out_channels = width
        else:
            blocks = [
                _OptimizedDiscriminatorBlock(channels, width // 2),
                _DiscriminatorBlock(width // 2, width, downsample=True),
                _DiscriminatorBlock(width, 2 * width, downsample=True),
                _DiscriminatorBlock(2 * width, 4 * width, downsample=True),
                _DiscriminatorBlock(4 * width, 8 * width, downsample=False),
            ]
            out_channels = 8 * width
        self.blocks = nn.Sequential(OrderedDict((f"block{i}", block) for i, block in enumerate(blocks, start=1)))
        self.relu = nn.ReLU()
        self.fc = nn.Linear(out_channels, 1)
        _init_xavier_(self.fc, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape ``(B,)`` for images ``x`` of shape ``(B, channels, image_size, image_size)``."""
        _check_input(x, self.input_shape, type(self).__name__)
        features = self.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        return self.fc(features).squeeze(1)


# --------------------------------------------------------------------------------------------------
# MLPs for 2-D mixtures
# --------------------------------------------------------------------------------------------------


def _mlp(in_dim: int, hidden: int, depth: int, out_dim: int, activation: type[nn.Module], **kwargs) -> nn.Sequential:
    """``depth`` hidden layers of ``hidden`` units, each ``Linear`` then ``activation(**kwargs)``; linear output."""
    layers: list[nn.Module] = []
    for layer_in in [in_dim] + [hidden] * (depth - 1):
        layers += [nn.Linear(layer_in, hidden), activation(**kwargs)]
    layers.append(nn.Linear(hidden, out_dim))
    return nn.Sequential(*layers)


class MLPGenerator(LatentGenerator):
    """MLP generator for low-dimensional data: ``depth`` ReLU hidden layers of ``hidden`` units, linear output.

    The output is unbounded (no tanh): mixture data is not scaled to ``[-1, 1]``. PyTorch's default
    initialization.

    Parameters
    ----------
    z_dim : int
        Latent dimension.
    out_dim : int
        Dimension of a sample (2 for the planar mixtures).
    hidden : int
        Units per hidden layer.
    depth : int
        Number of hidden layers, at least 1.
    """

    def __init__(self, z_dim: int = 2, out_dim: int = 2, hidden: int = 128, depth: int = 3) -> None:
        for name, value in (("out_dim", out_dim), ("hidden", hidden), ("depth", depth)):
            _require_positive_int(name, value)
        super().__init__(z_dim)
        self.out_dim = out_dim
        self.layers = _mlp(z_dim, hidden, depth, out_dim, nn.ReLU)

    def forward(self, z: Tensor) -> Tensor:
        """Map ``z`` of shape ``(B, z_dim)`` to samples of shape ``(B, out_dim)``."""
        self._check_latent(z)
        return self.layers(z)


class MLPDiscriminator(nn.Module):
    """MLP discriminator: ``depth`` hidden layers of ``hidden`` units with ``LeakyReLU(0.1)``, dense 1.

    The leaky slope is the standard CNN discriminator's. PyTorch's default initialization. See
    Note [the discriminator contract] in this module.

    Parameters
    ----------
    in_dim : int
        Dimension of a sample.
    hidden : int
        Units per hidden layer.
    depth : int
        Number of hidden layers, at least 1.
    """

    def __init__(self, in_dim: int = 2, hidden: int = 128, depth: int = 3) -> None:
        for name, value in (("in_dim", in_dim), ("hidden", hidden), ("depth", depth)):
            _require_positive_int(name, value)
        super().__init__()
        self.input_shape = (in_dim,)
        self.layers = _mlp(in_dim, hidden, depth, 1, nn.LeakyReLU, negative_slope=LEAKY_RELU_SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of shape ``(B,)`` for samples ``x`` of shape ``(B, in_dim)``."""
        _check_input(x, self.input_shape, type(self).__name__)
        return self.layers(x).squeeze(1)


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------


def build_models(
    arch: str,
    data_shape: Sequence[int],
    *,
    z_dim: Optional[int] = None,
    g_width: Optional[int] = None,
    d_width: Optional[int] = None,
    mlp_depth: int = 3,
) -> tuple[LatentGenerator, nn.Module]:
    """Build a generator and its discriminator for data of shape ``data_shape``.

    Parameters
    ----------
    arch : {"standard_cnn", "resnet", "mlp"}
        Architecture family.
    data_shape : sequence of int
        Shape of one sample: ``(channels, size, size)`` for images (sizes 16, 32, 48 for
        ``standard_cnn``; 32, 48 for ``resnet``), ``(dim,)`` for points (``mlp``).
    z_dim, g_width, d_width : int, optional
        Latent dimension and the ``width`` of G and D (``hidden`` for the MLPs); ``None`` keeps each
        class's default (the paper's values for the image models).
    mlp_depth : int
        Hidden layers of both MLPs; ignored by the image models.

    Returns
    -------
    (LatentGenerator, nn.Module)
        ``(G, D)``, freshly initialized.
    """
    problem = model_input_problem(arch, data_shape)
    if problem is not None:
        raise ValueError(problem)
    shape = tuple(data_shape)
    # only pass the options that were given, so that the classes' defaults apply otherwise
    g_kwargs = {"z_dim": z_dim} if z_dim is not None else {}

    if arch == "mlp":
        if g_width is not None:
            g_kwargs["hidden"] = g_width
        d_kwargs = {"hidden": d_width} if d_width is not None else {}
        return (
            MLPGenerator(out_dim=shape[0], depth=mlp_depth, **g_kwargs),
            MLPDiscriminator(in_dim=shape[0], depth=mlp_depth, **d_kwargs),
        )

    channels, image_size = shape[0], shape[1]
    if g_width is not None:
        g_kwargs["width"] = g_width
    d_kwargs = {"width": d_width} if d_width is not None else {}
    generator_class, discriminator_class = (
        (StandardCNNGenerator, StandardCNNDiscriminator)
        if arch == "standard_cnn"
        else (ResNetGenerator, ResNetDiscriminator)
    )
    return (
        generator_class(image_size=image_size, channels=channels, **g_kwargs),
        discriminator_class(image_size=image_size, channels=channels, **d_kwargs),
    )
