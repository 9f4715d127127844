"""One run configuration: everything that decides what a training run computes.

    from config import RunConfig
    config = RunConfig(norm="G", seed=3, groups=7)   # checked once, here
    config.label                                     # 'GroupNorm (7 groups)'

Saved with every result, the source of every label and (with utils.TRAINING_VERSION) a run's cache key.
"""

from __future__ import annotations

import dataclasses

import torch

from ghost import GhostBatchNorm2d
from model import DEFAULT_GROUPS, NORMS, Net, check_groups, norm_flag

TRAIN_IMAGES, TEST_IMAGES, VALIDATION_IMAGES = 60_000, 10_000, 10_000  # MNIST's splits, and the held-out part


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every variant trains with these defaults, so the comparison is about the norm alone."""

    norm: str = "B"              # 'B' BatchNorm, 'L' LayerNorm, 'G' GroupNorm (aliases work too)
    epochs: int = 20
    seed: int = 1                # seeds the weights, the shuffling and the augmentation
    batch_size: int = 128        # images per optimizer step
    max_lr: float = 0.01         # OneCycle peak learning rate (AdamW)
    weight_decay: float = 1e-4   # decoupled weight decay on all parameters
    l1_lambda: float | None = None  # weight of sum|w| over the conv weights; None: 1e-5 for 'B', else 0
    rotation: float = 7.0        # random rotation, degrees either way
    translation: float = 0.05    # random shift, fraction of the image size either way (1.4 px)
    elastic: float = 20.0        # elastic distortion, pixels (Simard et al. 2003)
    clean_epochs: int | None = None  # the last N epochs train unaugmented; None: 3 per 20 epochs, rounded down
    groups: int | None = None    # GroupNorm only; None: model.DEFAULT_GROUPS
    norm_batch: int | None = None  # BatchNorm only: statistics over ghost batches of this many images
    cuda_graph: bool = True      # on a GPU, replay each training step from a CUDA graph (CPU: eager)
    eval_batch_size: int = 2500  # images per forward pass when testing
    train_limit: int | None = None  # train on the first N training images (None: all)
    test_limit: int | None = None   # test on the first N test (or validation) images (None: all)
    validation: bool = False     # True: train on the first 50,000 images, test on the last 10,000

    def __post_init__(self):
        def set_(name, value):  # frozen once built; defaults are resolved here
            object.__setattr__(self, name, value)

        set_("norm", norm_flag(self.norm))
        train_images = TRAIN_IMAGES - VALIDATION_IMAGES * (self.validation is True)
        ints = dict(epochs=(1, 10_000), seed=(0, 2**63 - 1), batch_size=(1, TRAIN_IMAGES),
                    eval_batch_size=(1, 100_000), train_limit=(1, train_images),
                    test_limit=(1, VALIDATION_IMAGES if self.validation is True else TEST_IMAGES),
                    norm_batch=(1, TRAIN_IMAGES))
        for name, (low, high) in ints.items():
            if name in ("train_limit", "test_limit", "norm_batch") and getattr(self, name) is None:
                continue  # None: all images, or no ghost batches
            _check_number(name, getattr(self, name), low, high, integer=True)
        if self.clean_epochs is None:
            set_("clean_epochs", self.epochs * 3 // 20)
        _check_number("clean_epochs", self.clean_epochs, 0, self.epochs, integer=True)
        if self.l1_lambda is None:
            set_("l1_lambda", 1e-5 if self.norm == "B" else 0.0)
        floats = dict(max_lr=(1e-6, 10.0), weight_decay=(0.0, 1.0), rotation=(0.0, 180.0), translation=(0.0, 1.0),
                      elastic=(0.0, 100.0), l1_lambda=(0.0, 1.0))
        for name, (low, high) in floats.items():
            _check_number(name, getattr(self, name), low, high)
        if self.norm == "G":
            set_("groups", check_groups(DEFAULT_GROUPS if self.groups is None else self.groups))
        elif self.groups is not None:
            raise ValueError(f"groups={self.groups!r} applies to GroupNorm ('G') only, not norm={self.norm!r}")
        if self.norm_batch is not None and self.norm != "B":
            raise ValueError(f"norm_batch={self.norm_batch!r} applies to BatchNorm ('B') only: LayerNorm "
                             "and GroupNorm normalize each image by itself")
        for name in ("validation", "cuda_graph"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")

    @classmethod
    def build(cls, **settings):
        """RunConfig(**settings), with a message listing the valid names for an unknown one."""
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(names))
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; a run takes {', '.join(names)}")
        return cls(**settings)

    def net(self):
        """A new, untrained Net of this configuration (on the CPU)."""
        ghost = (lambda channels: GhostBatchNorm2d(channels, self.norm_batch)) if self.norm_batch else None
        return Net(self.norm, groups=self.groups or DEFAULT_GROUPS, norm_layer=ghost)

    @property
    def label(self):
        """Name for legends and titles, e.g. 'BatchNorm + L1 (λ=1e-05)', 'GroupNorm (2 groups)'."""
        name = NORMS[self.norm]
        if self.norm_batch:
            name += f" (ghost batches of {self.norm_batch})"
        if self.groups:
            name += f" ({self.groups} groups)"
        return name + (f" + L1 (λ={self.l1_lambda:g})" if self.l1_lambda else "")


def _check_number(name, value, low, high, integer=False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what, bounds = ("an integer", f"{low:,} to {high:,}") if integer else ("a number", f"{low:g} to {high:g}")
        raise ValueError(f"{name}={value!r} must be {what} from {bounds}")


def resolve_device(device=None):
    """torch.device for `device`; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device; use 'cpu', 'cuda' or None") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but no CUDA GPU is available; use device='cpu' or None")
    return device
