"""A small digits classifier as the feature extractor of FD, KID, precision / recall, density / coverage
and a class histogram.

The 8x8 digits that scikit-learn ships (1797 images, Alpaydin & Kaynak 1998) are the only
image data this project can use without a download, so they carry the image-quality
metrics of the CPU experiments: the *digits Fréchet distance* (FID with this classifier's
penultimate layer in place of Inception's pool3), KID, precision / recall and density / coverage in
the same features (:mod:`.features`), and the class histogram of generated samples (mode coverage
over the 10 digits, as Stacked-MNIST coverage in Metz et al. 2017). The classifier is registered with
torch-fidelity as :data:`FEATURE_EXTRACTOR`.

The classifier reads 16 px images, the digits studies' side, and is trained on the digits brought
to 16 px the way the GAN's real data is. Version 1 read 8 px: generated 16 px images were
2x2-averaged first, which removes exactly anything zero-mean within a 2x2 block, such as the
checkerboard of transposed convolutions. Measured (1,000 training digits against the 450 held-out
ones): a checkerboard of amplitude 0.3 added to the digits left the version-1 FD at 2.22 (clean:
2.22, identical); version 2 gives 17.8 against 7.3 clean. (Clipped to ``[-1, 1]``, the checkerboard is
no longer zero-mean on the black background, and version 1 saw the brightness change: 26.2.)

The classifier is trained by the project, reproducibly (fixed seed, CPU, a few seconds),
on a stratified 75/25 split, then cached at
``$STIEFEL_GAN_CACHE/digits_classifier-v<version>.pt`` (default folder
``~/.cache/stiefel_gan``); bump :data:`CLASSIFIER_VERSION` whenever the recipe changes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ..data.images import digits_split, load_digits
from .features import density_coverage, feature_set, feature_statistics, frechet_distance, kernel_distance, precision_recall
from .status import NONFINITE, MetricUnavailable
from .toy import kl_from_uniform

#: Version of the architecture + training recipe; part of the cache file name.
CLASSIFIER_VERSION = 2
#: Accuracy on the 450 held-out digits of the seed-0 split, measured when this recipe was written
#: (torch 2.15, CPU); the test suite asserts at least 0.95 on every retrain.
HELD_OUT_ACCURACY = 0.9822  # 442 / 450
#: Side of the images the classifier reads, the digits studies' side (see :func:`to_classifier_input`
#: for the other sides).
DIGITS_SIZE = 16
#: The smallest side accepted: the digits' own.
MIN_SIDE = 8
NUM_CLASSES = 10
#: Width of the penultimate layer, the feature space of :meth:`DigitsEvaluator.features`.
FEATURE_DIM = 64
#: Default share of samples a class must receive to count as covered: a fifth of the
#: uniform share ``1/10`` (the "fifth of the expected count" rule of PacGAN, Lin et al.
#: 2018), well above the ~0.2% per wrong class that the classifier's 1.8% error produces.
MIN_CLASS_FRACTION = 0.02
#: Softmax probability an image's class needs to count for ``classes_covered_confident``.
CONFIDENT_PROBABILITY = 0.9
#: Rows per KID subset: fits the 450 held-out digits (each subset a different 400 of them); the
#: unbiased KID's expectation does not depend on it, its spread does.
KID_SUBSET_SIZE = 400
#: The real digits a :class:`DigitsEvaluator` can compare with (:func:`~stiefel_gan.data.images.load_digits`).
REFERENCES = ("all", "held_out")


def reference_for_split(split: str) -> str:
    """The reference a run's digits metrics compare with at ``data.split=split``: the 450 held-out digits
    when the GAN trains without them (``train``), else all 1,797."""
    return "held_out" if split == "train" else "all"

_SEED = 0
_EPOCHS = 15
_BATCH_SIZE = 64
_LEARNING_RATE = 2e-3


class DigitsClassifier(nn.Module):
    """Three 3x3 convolutions and two dense layers for 1x16x16 digits in ``[-1, 1]``.

    The first convolution reads the 16 px image itself, so a pattern within a 2x2 block of pixels
    reaches the features. ``features`` is the 64-d penultimate activation (after ReLU), ``forward``
    the logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.convolutions = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 2x2
        )
        self.penultimate = nn.Sequential(nn.Flatten(), nn.Linear(64 * 2 * 2, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.penultimate(self.convolutions(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_digits_classifier(seed: int = _SEED) -> tuple[DigitsClassifier, float]:
    """Train :class:`DigitsClassifier` from scratch, deterministically on CPU.

    Adam (lr 2e-3), 15 epochs of batches of 64, on the training part (75%, stratified) of
    :func:`~stiefel_gan.data.images.digits_split`, brought to 16 px by
    :func:`~stiefel_gan.data.images.load_digits` (the upsampling the GAN's real digits get).  Training runs on one
    CPU thread (restored afterwards): the result then does not depend on the machine's
    thread count, and for these tiny convolutions one thread was ~50x faster than two
    contending for the cores of a loaded 2-core machine (4 s instead of minutes).

    Returns
    -------
    classifier : DigitsClassifier
        In eval mode, on CPU.
    held_out_accuracy : float
        Accuracy on the remaining 25% (450 images).
    """
    images, labels = load_digits(DIGITS_SIZE).tensors
    train_index, held_out_index = digits_split(seed)
    # fork_rng: the initialisation is seeded without touching the caller's global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = DigitsClassifier()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=_LEARNING_RATE)
    train_images, train_labels = images[train_index], labels[train_index]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        classifier.train()
        for _ in range(_EPOCHS):
            order = torch.randperm(len(train_index), generator=generator)
            for start in range(0, len(order), _BATCH_SIZE):
                batch = order[start : start + _BATCH_SIZE]
                loss = F.cross_entropy(classifier(train_images[batch]), train_labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    classifier.eval()
    with torch.no_grad():
        predictions = classifier(images[held_out_index]).argmax(dim=1)
    return classifier, float((predictions == labels[held_out_index]).float().mean())


def digits_classifier_cache_path() -> Path:
    """``$STIEFEL_GAN_CACHE`` (or ``~/.cache/stiefel_gan``) ``/digits_classifier-v<version>.pt``."""
    folder = os.environ.get("STIEFEL_GAN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "stiefel_gan")
    return Path(folder) / f"digits_classifier-v{CLASSIFIER_VERSION}.pt"


def load_digits_classifier() -> tuple[DigitsClassifier, float]:
    """The cached classifier and its held-out accuracy; trained and cached on first use.

    The cache file is written to a temporary file in the same folder and moved into place
    with ``os.replace``, so concurrent runs never read a half-written file.
    """
    path = digits_classifier_cache_path()
    if path.exists():
        record = torch.load(path, map_location="cpu", weights_only=True)
        classifier = DigitsClassifier()
        classifier.load_state_dict(record["state_dict"])
        return classifier.eval(), float(record["held_out_accuracy"])
    classifier, accuracy = train_digits_classifier()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save({"state_dict": classifier.state_dict(), "held_out_accuracy": accuracy}, stream)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return classifier, accuracy


class DigitsEvaluator:
    """Digits Fréchet distance and class coverage of generated images.

    Generated images are ``(N, C, H, W)`` float tensors in ``[-1, 1]`` with ``C`` in
    ``{1, 3}`` (three channels are averaged to grey) and ``H = W >= 8``, brought to the
    classifier's 16 px by :func:`to_classifier_input`.  The reference statistics are those of the
    classifier's features over the ``reference`` digits.

    Both metrics cost a fixed number of forward passes per image, whatever the images show.
    Images with a NaN or infinite pixel raise
    :class:`~stiefel_gan.metrics.status.MetricUnavailable` (``reason = "nonfinite"``): a NaN
    image has NaN features and logits, whose ``argmax`` would be an arbitrary class.  Identical
    images (a collapsed generator) are well defined: their features are a point mass, whose
    Fréchet distance is ``||mu - mu_real||^2 + Tr C_real`` exactly, and they cover one class
    with ``class_kl = log 10``.

    Parameters
    ----------
    classifier : DigitsClassifier, optional
        Default: :func:`load_digits_classifier` (cached, trained on first use).
    batch_size : int
        Images per forward pass.
    reference : {"all", "held_out"}
        The real digits the Fréchet distance compares with: all 1,797, or the 450 that
        :func:`~stiefel_gan.data.images.digits_split` holds out from the classifier (and, with
        ``data.split=train``, from the GAN).
    image_size : int
        The side the real digits are brought to before they go the way generated images go (upscaled
        by :func:`~stiefel_gan.data.images.load_digits`, then read by :func:`to_classifier_input`): at the
        GAN's side, a real digit and its copy by a generator give the same features. The default is the
        classifier's own 16 px.
    """

    def __init__(self, classifier: DigitsClassifier | None = None, batch_size: int = 512,
                 reference: str = "all", image_size: int = DIGITS_SIZE) -> None:
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
        if reference not in REFERENCES:
            raise ValueError(f"reference={reference!r} is not allowed: use one of {', '.join(REFERENCES)}")
        #: held-out accuracy of the default classifier; None for a classifier passed in
        self.held_out_accuracy: float | None = None
        if classifier is None:
            classifier, self.held_out_accuracy = load_digits_classifier()
        self.classifier = classifier.eval()
        self.batch_size = batch_size
        self.reference = reference
        self.image_size = image_size
        reference_images = load_digits(image_size, split=reference).tensors[0]
        #: the reference digits' features, float64 ``(N_real, 64)``, and their mean and covariance
        self.reference_features = feature_set(self.features(reference_images))
        self.reference_mu, self.reference_cov = feature_statistics(self.reference_features)
        # KID's kernel scale: 1 / E||r||^2 over the reference features r, not Binkowski et al.'s 1 / D. These
        # ReLU features have norms ~65 in D = 64, so with 1 / D the cubic kernel's values are ~(66)^3 and the
        # KID of real digits is noise in the thousands; with 1 / E||r||^2 a reference feature's kernel with
        # itself is (2)^3 on average, and KID no longer changes when every feature is scaled by a constant.
        self.kid_gamma = float(1.0 / (self.reference_features ** 2).sum(dim=1).mean())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, shape ``(N, 64)``, float32 on CPU."""
        return self._run(images, self.classifier.features)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted digit of every image, shape ``(N,)``, int64."""
        return self._run(images, self.classifier).argmax(dim=1)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax of the classifier's logits, shape ``(N, 10)``, float32: row ``n`` is ``p(digit | image n)``."""
        return torch.softmax(self._run(images, self.classifier), dim=1)

    def frechet_distance(self, fake_images: torch.Tensor) -> float:
        """Fréchet distance between the features of ``fake_images`` and of the real digits.

        torch-fidelity's FD (:func:`stiefel_gan.metrics.features.frechet_distance`); needs at least 2 images,
        and like FID it is biased upwards for small sets (compare equal sample sizes).
        Raises :class:`~stiefel_gan.metrics.status.MetricUnavailable` (``"nonfinite"``) for
        images with a NaN or infinite pixel.
        """
        mu, cov = feature_statistics(self.features(fake_images))
        return frechet_distance(mu, cov, self.reference_mu, self.reference_cov)

    def feature_metrics(self, fake_images: torch.Tensor) -> dict[str, float]:
        """Every comparison of the features of ``fake_images`` with the reference digits' features, the
        features computed once (:mod:`stiefel_gan.metrics.features`):

        ``digits_fd`` (Fréchet distance), ``kid`` (KID mean over :data:`~.features.KID_SUBSETS` subsets of
        ``min(KID_SUBSET_SIZE, N_fake, N_real)`` rows, kernel scale :attr:`kid_gamma`), ``precision`` and
        ``recall`` (k = 3), ``density``
        and ``coverage`` (k = 5). Needs at least 4 images; raises MetricUnavailable (``"nonfinite"``)
        for images with a NaN or infinite pixel.
        """
        fake = feature_set(self.features(fake_images), "fake features", at_least=4)
        real = self.reference_features
        return {
            "digits_fd": frechet_distance(*feature_statistics(fake), self.reference_mu, self.reference_cov),
            "kid": kernel_distance(fake, real, subset_size=min(KID_SUBSET_SIZE, len(fake), len(real)),
                                   gamma=self.kid_gamma),
            **precision_recall(fake, real),
            **density_coverage(fake, real),
        }

    def class_coverage(self, fake_images: torch.Tensor, min_fraction: float = MIN_CLASS_FRACTION) -> dict:
        r"""How evenly the generated images spread over the 10 digits.

        Returns
        -------
        dict
            ``classes_covered`` (int)
                Number of digits predicted for at least ``min_fraction`` of the images
                (default :data:`MIN_CLASS_FRACTION` = 2%, a fifth of the uniform share).
            ``classes_covered_confident`` (int)
                The same, counting only the images the classifier gives its class with softmax
                probability at least :data:`CONFIDENT_PROBABILITY`: blobs that are no digit
                get a class by argmax but rarely with confidence.
            ``class_kl`` (float)
                :math:`\mathrm{KL}(\hat p \,\|\, U) = \sum_c \hat p_c \log(10\, \hat p_c)`
                of the predicted-class histogram :math:`\hat p` from uniform: 0 for a
                balanced set, ``log 10 = 2.303`` for a single class.  Empty classes
                contribute exactly 0, so no smoothing is involved.

        Raises
        ------
        MetricUnavailable
            ``reason = "nonfinite"`` when an image has a NaN or infinite pixel.
        """
        if not (0 < min_fraction <= 1):
            raise ValueError(f"min_fraction={min_fraction!r}: expected a float in (0, 1]")
        probabilities = self.probabilities(fake_images)
        confidence, predictions = probabilities.max(dim=1)
        counts = torch.bincount(predictions, minlength=NUM_CLASSES)
        shares = counts.double() / len(predictions)
        confident = predictions[confidence >= CONFIDENT_PROBABILITY]
        confident_shares = torch.bincount(confident, minlength=NUM_CLASSES).double() / len(predictions)
        return {
            "classes_covered": int((shares >= min_fraction).sum()),
            "classes_covered_confident": int((confident_shares >= min_fraction).sum()),
            "class_kl": kl_from_uniform(counts.numpy()),
        }

    def memorization_ratio(self, fake_images: torch.Tensor) -> float:
        r"""How much closer generated digits lie to the training digits than unseen real digits do.

        .. math::

            r = \frac{\operatorname{mean}_{g} \min_{t} \lVert f(g) - f(t) \rVert}
                     {\operatorname{mean}_{h} \min_{t} \lVert f(h) - f(t) \rVert}

        over the classifier's features ``f`` (real digits at the evaluator's ``image_size``, so that a
        copied training digit is at distance 0), with ``t`` the training part of
        :func:`~stiefel_gan.data.images.digits_split`, ``g`` the generated images and ``h`` the 450
        held-out digits. ``r = 1``: generated digits are as far from their nearest training digit as
        new real digits are; ``r < 1``: closer, which at ``r`` well below 1 means copying. Meaningful
        when the GAN trained on that training part only (``data.split=train``).
        """
        train_images = load_digits(self.image_size, split="train").tensors[0]
        held_out_images = load_digits(self.image_size, split="held_out").tensors[0]
        train = self.features(train_images)

        def nearest_training_distance(images: torch.Tensor) -> torch.Tensor:
            # the direct differences, not |a|^2 + |b|^2 - 2 a.b, whose round-off leaves a copy at distance > 0
            distances = torch.cdist(self.features(images), train, compute_mode="donot_use_mm_for_euclid_dist")
            return distances.min(dim=1).values.mean()

        return float(nearest_training_distance(fake_images) / nearest_training_distance(held_out_images))

    def _run(self, images: torch.Tensor, network) -> torch.Tensor:
        batches = torch.split(to_classifier_input(images), self.batch_size)
        with torch.no_grad():
            return torch.cat([network(batch) for batch in batches])


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """Validate images and bring them to what the classifier reads: float32 ``(N, 1, 16, 16)`` on CPU.

    ``images`` are float ``(N, C, H, W)`` in ``[-1, 1]``, ``C`` in ``{1, 3}`` (three channels are
    averaged to grey), square, of side ``H >= 8``. The side decides the resampling:

    - 16 (the digits studies' side): none, every pixel reaches the first convolution;
    - a multiple of 16: each ``k x k`` block is averaged (``F.avg_pool2d``), exact for an image
      that is a nearest-neighbour enlargement of a 16 px one;
    - any other side: bilinear, ``align_corners=False``, antialiased when shrinking. An 8 px digit
      becomes exactly what :func:`~stiefel_gan.data.images.load_digits` makes of it at 16 px.

    Detail finer than a 16 px pixel of a larger image is averaged away, as any 16 px view would.
    """
    if not (torch.is_tensor(images) and images.is_floating_point()):
        raise ValueError(f"images must be a float tensor in [-1, 1], got {type(images).__name__} "
                         f"{getattr(images, 'dtype', '')}")
    if images.dim() != 4 or images.shape[0] < 1 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images have shape {tuple(images.shape)}: expected (N, C, H, W) with N >= 1 and C in {{1, 3}}"
        )
    height, width = images.shape[-2:]
    if height != width or height < MIN_SIDE:
        raise ValueError(f"images are {height}x{width}: expected square images of side >= {MIN_SIDE}")
    if not torch.isfinite(images).all():
        raise MetricUnavailable(NONFINITE, "images contain NaN or inf")
    images = images.detach().to("cpu", torch.float32)
    if images.shape[1] == 3:
        images = images.mean(dim=1, keepdim=True)
    if height % DIGITS_SIZE == 0:
        if height != DIGITS_SIZE:
            images = F.avg_pool2d(images, height // DIGITS_SIZE)
    else:
        images = F.interpolate(images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False,
                               antialias=height > DIGITS_SIZE)
    return images


#: The name :class:`DigitsFeatureExtractor` is registered under in torch-fidelity.
FEATURE_EXTRACTOR = "stiefel-gan-digits"


class DigitsFeatureExtractor(FeatureExtractorBase):
    """The digits classifier as a torch-fidelity feature extractor (registered as :data:`FEATURE_EXTRACTOR`).

    torch-fidelity feeds ``uint8`` RGB batches ``(N, 3, H, W)``; they are mapped back to ``[-1, 1]``
    by ``x / 127.5 - 1`` (the inverse of its ``round((x + 1) * 127.5)``) and go the way of
    :func:`to_classifier_input`. Features: ``"64"`` (penultimate layer: FID, KID, precision/recall)
    and ``"logits"`` (Inception Score), both in float64: torch-fidelity's statistics keep the dtype they
    get, and a float32 mean alone moves the FD by ~3e-6 relative. The weights are the cached classifier's
    (:func:`load_digits_classifier`).
    """

    def __init__(self, name, features_list, **kwargs) -> None:
        super().__init__(name, features_list)
        self.classifier, _ = load_digits_classifier()

    @staticmethod
    def get_provided_features_list():
        return "64", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "64", "kid": "64", "prc": "64"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, DIGITS_SIZE, DIGITS_SIZE, dtype=torch.uint8)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if images.dtype != torch.uint8:
            raise ValueError(f"torch-fidelity feeds uint8 images, got {images.dtype}")
        device = images.device
        features = self.classifier.features(to_classifier_input(images.float() / 127.5 - 1).to(device))
        available = {"64": features.double(), "logits": self.classifier.head(features).double()}
        return tuple(available[name] for name in self.features_list)


if FEATURE_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(FEATURE_EXTRACTOR, DigitsFeatureExtractor)
