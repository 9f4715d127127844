"""One run configuration: everything that decides what a training run computes.

    from config import RunConfig
    config = RunConfig(norm="G", seed=3, groups=7)   # checked once, here
    config.label                                     # 'GroupNorm (7 groups)'

utils.run, utils.sweep, the benchmarks and the studies all build one of these; it is saved
with every result, and labels derive from it.
"""

from __future__ import annotations

import dataclasses

import torch

from model import ACTIVATION, ACTIVATIONS, DEFAULT_GROUPS, LAYOUT, NORMS, Net, check_groups, layout_channels, norm_flag


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one training run computes, checked once when built.
    Every variant trains with these defaults, so the comparison is about the norm alone."""

    norm: str = "B"              # 'B' BatchNorm, 'L' LayerNorm, 'G' GroupNorm (aliases work too)
    layout: str = LAYOUT         # the network's blocks (model.LAYOUT); the default is the one compared
    activation: str = ACTIVATION  # the nonlinearity after each norm: "silu" (model.ACTIVATION), or "relu"
    epochs: int = 20
    seed: int = 1                # seeds the weights, the shuffling and the augmentation
    batch_size: int = 128        # images per optimizer step
    optimizer: str = "adamw"     # "adamw", or "sgd" (Nesterov)
    max_lr: float = 0.01         # OneCycle peak learning rate
    momentum: float = 0.9        # SGD only
    weight_decay: float = 1e-4   # decoupled weight decay on all parameters
    l1_lambda: float | None = None  # weight of sum|w| over the conv weights; None: 1e-5 for 'B', else 0
    label_smoothing: float = 0.0  # mass spread evenly over the 10 classes in the training loss
    rotation: float = 7.0        # random rotation, degrees either way
    translation: float = 0.05    # random shift, fraction of the image size either way (1.4 px)
    scale: float = 0.0           # random zoom, fraction either way
    elastic: float = 20.0        # elastic distortion, pixels (Simard et al. 2003); chosen by studies/search.py
    clean_epochs: int | None = None  # the last N epochs train on the images as they are, without augmentation;
    #                              None: 3 per 20 epochs, rounded down (3 for the recipe's 20; none under 7)
    groups: int | None = None    # GroupNorm only; None: model.DEFAULT_GROUPS
    norm_batch: int | None = None  # BatchNorm only: statistics over ghost batches of this many images
    precision: str = "fp32"      # "fp32", or "bf16" (autocast for the training forward pass)
    cuda_graph: bool = True      # on a GPU, replay forward and backward from a CUDA graph (CPU: eager)
    eval_batch_size: int = 2500  # images per forward pass when testing
    train_limit: int | None = None  # train on the first N training images (None: all)
    test_limit: int | None = None   # test on the first N test (or validation) images (None: all)
    validation: bool = False     # True: train on the first 50,000 images, test on the last 10,000

    def __post_init__(self):
        flag = norm_flag(self.norm)

        def set_(name, value):  # the dataclass is frozen once built; resolve defaults here
            object.__setattr__(self, name, value)

        set_("norm", flag)
        ints = dict(epochs=(1, 10_000), seed=(0, 2**63 - 1), batch_size=(1, 60_000),
                    eval_batch_size=(1, 100_000))
        for name, (low, high) in ints.items():
            _check_number(name, getattr(self, name), low, high, integer=True)
        if self.clean_epochs is None:
            set_("clean_epochs", self.epochs * 3 // 20)
        _check_number("clean_epochs", self.clean_epochs, 0, self.epochs, integer=True)
        for name in ("train_limit", "test_limit", "norm_batch"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), 1, 60_000, integer=True, none_ok=True)
        floats = dict(max_lr=(1e-6, 10.0), momentum=(0.0, 0.999), weight_decay=(0.0, 1.0),
                      label_smoothing=(0.0, 0.5), rotation=(0.0, 180.0), translation=(0.0, 1.0),
                      scale=(0.0, 0.5), elastic=(0.0, 100.0))
        for name, (low, high) in floats.items():
            _check_number(name, getattr(self, name), low, high)
        if self.l1_lambda is None:
            set_("l1_lambda", 1e-5 if flag == "B" else 0.0)
        _check_number("l1_lambda", self.l1_lambda, 0.0, 1.0)
        channels = layout_channels(self.layout)
        if flag == "G":
            set_("groups", DEFAULT_GROUPS if self.groups is None else self.groups)
            check_groups(self.groups, channels)
        elif self.groups is not None:
            raise ValueError(f"groups={self.groups!r} applies to GroupNorm ('G') only, not norm={flag!r}")
        if self.norm_batch is not None and flag != "B":
            raise ValueError(f"norm_batch={self.norm_batch!r} applies to BatchNorm ('B') only: LayerNorm "
                             "and GroupNorm normalize each image by itself")
        for name, allowed in (("optimizer", ("adamw", "sgd")), ("precision", ("fp32", "bf16")),
                              ("activation", tuple(ACTIVATIONS))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} must be one of {allowed}")
        for name in ("validation", "cuda_graph"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")

    @classmethod
    def build(cls, **settings):
        """RunConfig(**settings), with a message listing the valid names for an unknown one."""
        unknown = sorted(set(settings) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; a run takes "
                             f"{', '.join(field.name for field in dataclasses.fields(cls))}")
        return cls(**settings)

    def net(self):
        """A new, untrained Net of this configuration (on the CPU)."""
        return Net(self.norm, groups=self.groups or DEFAULT_GROUPS, layout=self.layout, norm_batch=self.norm_batch,
                   activation=self.activation)

    @property
    def label(self):
        """Name for legends and titles, e.g. 'BatchNorm + L1 (λ=1e-05)', 'GroupNorm (2 groups)'."""
        name = NORMS[self.norm]
        if self.norm_batch:
            name += f" (ghost batches of {self.norm_batch})"
        if self.groups:
            name += f" ({self.groups} groups)"
        return name + (f" + L1 (λ={self.l1_lambda:g})" if self.l1_lambda else "")


def _check_number(name, value, low, high, integer=False, none_ok=False):
    """Raise ValueError naming `name` unless value is a number (not a bool) in [low, high]."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what, bounds = ("an integer", f"{low:,} to {high:,}") if integer else ("a number", f"{low:g} to {high:g}")
        raise ValueError(f"{name}={value!r} must be {what} from {bounds}" + (" (or None)" if none_ok else ""))


def resolve_device(device=None):
    """torch.device for `device`; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but no CUDA GPU is available; use device='cpu' or None")
    return device


