"""The network compared in this repository: one small MNIST CNN, three normalizations.

    from model import Net
    net = Net("B")            # BatchNorm  (train it with the L1 penalty, see utils.run)
    net = Net("L")            # LayerNorm
    net = Net("G", groups=4)  # GroupNorm

Which axes each norm normalizes over, for an activation of shape (N, C, H, W):

- BatchNorm ('B'): over (N, H, W) for each channel, i.e. across the batch. Training uses
  the batch's statistics; eval uses running averages, so call model.eval() to test.
- LayerNorm ('L'): over (C, H, W) for each sample, with a per-channel scale and shift.
  This is nn.GroupNorm(1, C), which is LayerNorm over everything but the batch axis and
  needs no hard-coded spatial size (nn.LayerNorm([C, H, W]) would). We chose it over the
  per-pixel "LayerNorm2d" (over C only, as in ConvNeXt) because it is the definition of
  Ba et al. applied to a conv layer and because it is GroupNorm's limiting case, so 'L'
  and 'G' differ only in the number of groups.
- GroupNorm ('G'): over (C/groups, H, W) for each sample and group of channels, with a
  per-channel scale and shift. `groups` must divide every channel count in CHANNELS.

LayerNorm and GroupNorm behave the same in train and eval mode (no running statistics).

This file depends on torch alone, so any notebook can import it.
"""

import torch
from torch import nn
import torch.nn.functional as F

# Output channels of the five 3x3 convolutions. The first runs at 28x28, the next two at
# 14x14, the last two at 7x7: pooling early keeps the network fast on a CPU.
CHANNELS = (8, 12, 16, 16, 16)
DEFAULT_GROUPS = 4  # divides 8, 12 and 16: groups of 2, 3 and 4 channels

NORMS = {"B": "BatchNorm", "L": "LayerNorm", "G": "GroupNorm"}
_ALIASES = {
    "b": "B", "bn": "B", "batch": "B", "batchnorm": "B",
    "l": "L", "ln": "L", "layer": "L", "layernorm": "L",
    "g": "G", "gn": "G", "group": "G", "groupnorm": "G",
}


def norm_flag(norm):
    """Return the canonical flag 'B', 'L' or 'G' for a flag or alias (case-insensitive)."""
    key = norm.strip().lower().replace("_", "").replace("-", "") if isinstance(norm, str) else None
    if key not in _ALIASES:
        raise ValueError(
            f"norm={norm!r} is not a known normalization; use one of 'B' (BatchNorm), "
            f"'L' (LayerNorm) or 'G' (GroupNorm), or an alias: {sorted(_ALIASES)}"
        )
    return _ALIASES[key]


def check_groups(groups, channels=CHANNELS):
    """Raise ValueError unless `groups` is a positive int dividing every channel count."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups={groups!r} must be a positive integer")
    bad = [c for c in channels if c % groups]
    if bad:
        valid = [g for g in range(1, min(channels) + 1) if all(c % g == 0 for c in channels)]
        raise ValueError(
            f"groups={groups} does not divide the channel counts {bad} of CHANNELS={channels}; "
            f"GroupNorm needs one of {valid}"
        )


def make_norm(norm, channels, groups=DEFAULT_GROUPS):
    """The normalization layer for `channels` channels chosen by the flag `norm`."""
    flag = norm_flag(norm)
    if flag == "B":
        return nn.BatchNorm2d(channels)
    if flag == "L":
        return nn.GroupNorm(1, channels)  # over (C, H, W) per sample, see the module docstring
    check_groups(groups, (channels,))
    return nn.GroupNorm(groups, channels)


class ConvBlock(nn.Sequential):
    """3x3 convolution (padding 1, no bias: the norm's shift replaces it) -> norm -> ReLU."""

    def __init__(self, in_channels, out_channels, norm, groups):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            make_norm(norm, out_channels, groups),
            nn.ReLU(inplace=True),
        )


def max_pool2(x):
    """2x2 max pooling, stride 2. Same result as F.max_pool2d(x, 2) on even sizes, and
    several times faster on a CPU for these small NCHW tensors."""
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))


class Net(nn.Module):
    """MNIST classifier with under 8,000 parameters for each of the three norms.

    Args:
        norm: 'B' (BatchNorm), 'L' (LayerNorm) or 'G' (GroupNorm); case-insensitive,
            aliases such as 'bn', 'layernorm' or 'GroupNorm' work too.
        groups: GroupNorm's number of groups (used for 'G' only); must divide every
            channel count in CHANNELS, i.e. be 1, 2 or 4.

    forward(x) takes (N, 1, 28, 28) normalized images and returns (N, 10) log-probabilities.
    """

    def __init__(self, norm="B", groups=DEFAULT_GROUPS):
        super().__init__()
        self.norm = norm_flag(norm)
        if self.norm == "G":
            check_groups(groups)
        self.groups = groups if self.norm == "G" else None
        c1, c2, c3, c4, c5 = CHANNELS
        self.block1 = ConvBlock(1, c1, self.norm, groups)   # (N, 8, 28, 28), then pool to 14
        self.block2 = ConvBlock(c1, c2, self.norm, groups)  # (N, 12, 14, 14)
        self.block3 = ConvBlock(c2, c3, self.norm, groups)  # (N, 16, 14, 14), then pool to 7
        self.block4 = ConvBlock(c3, c4, self.norm, groups)  # (N, 16, 7, 7)
        self.block5 = ConvBlock(c4, c5, self.norm, groups)  # (N, 16, 7, 7)
        self.head = nn.Conv2d(c5, 10, 1)                    # 1x1 conv on the pooled features

    def forward(self, x):
        x = max_pool2(self.block1(x))
        x = max_pool2(self.block3(self.block2(x)))
        x = self.block5(self.block4(x))
        x = x.mean(dim=(2, 3), keepdim=True)  # global average pool: (N, 16, 1, 1)
        x = self.head(x).flatten(1)           # (N, 10)
        return F.log_softmax(x.float(), dim=1)


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
