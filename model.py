"""The network compared in this repository: one small MNIST CNN, three normalizations.

    from model import Net
    net = Net("B")            # BatchNorm  (train it with the L1 penalty, see utils.run)
    net = Net("L")            # LayerNorm
    net = Net("G", groups=7)  # GroupNorm (groups must divide 14)
    net = Net.pretrained("G") # the notebook's trained GroupNorm network, in eval mode

Which axes each norm normalizes over, for an activation of shape (N, C, H, W):

- BatchNorm ('B'): over (N, H, W) for each channel, i.e. across the batch. Training uses
  the batch's statistics; eval uses running averages, so call model.eval() to test.
- LayerNorm ('L'): over (C, H, W) for each sample, with a per-channel scale and shift.
  This is LayerNorm below, a named nn.GroupNorm(1, C): LayerNorm over everything but the
  batch axis, with no hard-coded spatial size (nn.LayerNorm([C, H, W]) would). We chose it over the
  per-pixel "LayerNorm2d" (over C only, as in ConvNeXt) because it is the definition of
  Ba et al. applied to a conv layer and because it is GroupNorm's limiting case, so 'L'
  and 'G' differ only in the number of groups.
- GroupNorm ('G'): over (C/groups, H, W) for each sample and group of channels, with a
  per-channel scale and shift. `groups` must divide every channel count of the layout.

LayerNorm and GroupNorm behave the same in train and eval mode (no running statistics).
Net(..., norm_batch=k) gives BatchNorm ghost batches: statistics over groups of k images
(GhostBatchNorm2d), which the batch-size study uses to vary the normalization batch alone.

This file depends on torch (and Python's standard library) alone, so any notebook can import it.
"""

import os
import re

import torch
from torch import nn
import torch.nn.functional as F

DEFAULT_GROUPS = 2  # GroupNorm groups: 7 channels each (the divisors of 14 are 1, 2, 7, 14)

NORMS = {"B": "BatchNorm", "L": "LayerNorm", "G": "GroupNorm"}
# The notebook's committed run saves its three trained networks here (Net.pretrained reads them).
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Images", "notebook")
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


def check_groups(groups, channels=None):
    """Raise ValueError unless `groups` is a positive int dividing every channel count
    (by default those of LAYOUT)."""
    channels = channels or layout_channels(LAYOUT)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups={groups!r} must be a positive integer")
    bad = [c for c in channels if c % groups]
    if bad:
        valid = [g for g in range(1, min(channels) + 1) if all(c % g == 0 for c in channels)]
        raise ValueError(
            f"groups={groups} does not divide the channel count(s) {bad}; "
            f"GroupNorm needs one of {valid}"
        )


class LayerNorm(nn.GroupNorm):
    """LayerNorm for conv activations: over (C, H, W) of each sample, with a per-channel
    scale and shift. The maths of nn.GroupNorm(1, C); its own name so that summaries and
    printouts say LayerNorm."""

    def __init__(self, channels):
        super().__init__(1, channels)


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics come from ghost batches: consecutive groups of
    `ghost` images of the batch, each normalized by its own mean and variance (the last group
    may be smaller). The running averages used in eval mode follow the mean over the groups of
    their statistics. This isolates the normalization batch from the optimizer's batch."""

    def __init__(self, channels, ghost):
        super().__init__(channels)
        self.ghost = ghost

    def forward(self, x):
        if not self.training or len(x) <= self.ghost:
            return super().forward(x)
        x = x.float()  # statistics in fp32 under bf16 autocast too, as nn.BatchNorm2d keeps them
        full = len(x) // self.ghost * self.ghost
        groups = [x[:full].unflatten(0, (-1, self.ghost))]  # (G, ghost, C, H, W)
        if full < len(x):
            groups.append(x[full:].unsqueeze(0))            # (1, rest, C, H, W)
        normalized, means, variances = [], [], []
        for group in groups:
            mean = group.mean(dim=(1, 3, 4), keepdim=True)
            var = group.var(dim=(1, 3, 4), unbiased=False, keepdim=True)
            normalized.append(((group - mean) / torch.sqrt(var + self.eps)).flatten(0, 1))
            size = group[0].numel() / group.shape[2]  # values per channel in one group
            means.append(mean.flatten(1))
            variances.append(var.flatten(1) * size / (size - 1))  # unbiased, as BatchNorm keeps it
        with torch.no_grad():
            self.num_batches_tracked += 1
            # momentum=None means a cumulative average, as in nn.BatchNorm2d
            weight = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
            self.running_mean.lerp_(torch.cat(means).mean(0), weight)
            self.running_var.lerp_(torch.cat(variances).mean(0), weight)
        shape = (1, -1, 1, 1)
        return torch.cat(normalized) * self.weight.view(shape) + self.bias.view(shape)


def make_norm(norm, channels, groups=DEFAULT_GROUPS, norm_batch=None):
    """The normalization layer for `channels` channels chosen by the flag `norm`; norm_batch
    gives BatchNorm ghost batches of that many images."""
    flag = norm_flag(norm)
    if flag == "B":
        return GhostBatchNorm2d(channels, norm_batch) if norm_batch else nn.BatchNorm2d(channels)
    if flag == "L":
        return LayerNorm(channels)  # over (C, H, W) per sample, see the module docstring
    check_groups(groups, (channels,))
    return nn.GroupNorm(groups, channels)


ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU}  # the nonlinearity after each norm
ACTIVATION = "silu"  # the recipe's: chosen over ReLU on a validation split (studies/search.py, round 13)


class ConvBlock(nn.Sequential):
    """3x3 convolution (no bias: the norm's shift replaces it) -> norm -> SiLU (or ReLU).
    norm(channels) builds the normalization layer."""

    def __init__(self, in_channels, out_channels, norm, padding=1, activation=ACTIVATION):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
            norm(out_channels),
            ACTIVATIONS[activation](inplace=True),
        )


class SeparableBlock(nn.Sequential):
    """Depthwise-separable convolution: a 3x3 convolution of each channel by itself -> norm ->
    SiLU, then a 1x1 convolution mixing the channels -> norm -> SiLU. About 9C + C*C' weights
    where a full 3x3 convolution has 9C*C'."""

    def __init__(self, in_channels, out_channels, norm, padding=1, activation=ACTIVATION):
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=padding, groups=in_channels, bias=False),
            norm(in_channels),
            ACTIVATIONS[activation](inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            norm(out_channels),
            ACTIVATIONS[activation](inplace=True),
        )


# The layers after the space-to-depth stem, as tokens: c<n> a 3x3 convolution to n channels
# (zero padding), v<n> the same without padding (the map shrinks by 2), d<n> / dv<n> a
# depthwise-separable block (padded / unpadded), p 2x2 max pooling. A first token f<n> adds a
# padded 3x3 block to n channels at full resolution, before the stem (which then gives 4n channels).
LAYOUT = "c14 c14 p v14 v14 c14"
_TOKEN = re.compile(r"(c|v|d|dv|f)(\d+)|p")


def layout_channels(layout):
    """The output channel count of every block in `layout`, e.g. [14, 14, 14, 14, 14]."""
    tokens = layout.split()
    if (not tokens or not all(_TOKEN.fullmatch(t) for t in tokens)
            or any(t.startswith("f") for t in tokens[1:])):
        raise ValueError(f"layout={layout!r}: use space-separated tokens c<n>, v<n>, d<n>, dv<n> and p "
                         f"(and f<n> first only), e.g. {LAYOUT!r}")
    return [int(t.lstrip("cdvf")) for t in tokens if t != "p"]


def build_layers(layout, norm, activation=ACTIVATION):
    """The feature layers of `layout`: space-to-depth, then one block per token; norm(channels)
    builds each normalization layer; `activation` names the nonlinearity (ACTIVATIONS)."""
    layers, channels, tokens = [], 1, layout.split()
    if tokens[0].startswith("f"):  # a block at 28x28 before the stem
        layers.append(ConvBlock(1, int(tokens[0][1:]), norm, activation=activation))
        channels, tokens = int(tokens[0][1:]), tokens[1:]
    layers, channels = layers + [nn.PixelUnshuffle(2)], 4 * channels  # (N, 4 * channels, 14, 14)
    for token in tokens:
        if token == "p":
            layers.append(nn.MaxPool2d(2))
            continue
        kind, width = _TOKEN.fullmatch(token).groups()
        block = SeparableBlock if kind.startswith("d") else ConvBlock
        layers.append(block(channels, int(width), norm, padding=0 if kind.endswith("v") else 1,
                            activation=activation))
        channels = int(width)
    return nn.Sequential(*layers), channels


class Net(nn.Module):
    """MNIST classifier with under 8,000 parameters for each of the three norms.

    Args:
        norm: 'B' (BatchNorm), 'L' (LayerNorm) or 'G' (GroupNorm); case-insensitive,
            aliases such as 'bn', 'layernorm' or 'GroupNorm' work too.
        groups: GroupNorm's number of groups (used for 'G' only); must divide every channel
            count of the layout (14 by default: 1, 2, 7 or 14). Default 2.
        layout: the blocks after the stem (see LAYOUT); the default is the network compared here.
        norm_batch: BatchNorm only: training statistics over ghost batches of this many images
            (None: the whole batch). See GhostBatchNorm2d.
        activation: the nonlinearity after each norm, 'silu' (default, ACTIVATION) or 'relu'.

    forward(x) takes (N, 1, 28, 28) normalized images and returns (N, 10) log-probabilities.

    Layout, designed for accuracy and CPU speed together: a space-to-depth stem turns each
    2x2 patch into 4 channels (N, 4, 14, 14), so the first 3x3 convolution sees a 6x6 pixel
    window at stride 2 without any 28x28 activation (those dominate a CPU's time); two
    blocks at 14x14, max pooling to 7x7, then unpadded blocks 7 -> 5 -> 3 (no zero borders
    for the per-sample norms to average in), a padded one at 3x3, global average pooling and a
    1x1 convolution to the 10 classes. No dropout: the augmentation in utils.py regularizes.
    """

    def __init__(self, norm="B", groups=DEFAULT_GROUPS, layout=LAYOUT, norm_batch=None, activation=ACTIVATION):
        super().__init__()
        self.norm = norm_flag(norm)
        channels = layout_channels(layout)
        if self.norm == "G":
            check_groups(groups, channels)
        if norm_batch is not None and (self.norm != "B" or isinstance(norm_batch, bool)
                                       or not isinstance(norm_batch, int) or norm_batch < 1):
            raise ValueError(f"norm_batch={norm_batch!r}: ghost batches are a positive image count, "
                             "for BatchNorm ('B') only")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} must be one of {sorted(ACTIVATIONS)}")
        self.groups = groups if self.norm == "G" else None
        self.layout, self.norm_batch, self.activation = layout, norm_batch, activation
        self.features, width = build_layers(  # (N, width, H', W')
            layout, lambda channels: make_norm(self.norm, channels, groups, norm_batch), activation)
        self.head = nn.Conv2d(width, 10, 1)  # on the globally averaged features

    @classmethod
    def pretrained(cls, norm="B", path=None):
        """The committed trained network of a norm, in eval mode: weights from the notebook's
        run (make run), with what produced them in .info (configuration, test accuracy, commit).

            net = Net.pretrained("G")
            log_probs = net(images)  # (N, 1, 28, 28) normalized like data.py: (x/255 - 0.1307) / 0.3081
        """
        flag = norm_flag(norm)
        path = path or os.path.join(PRETRAINED_DIR, f"net_{flag}.pt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no trained weights there; `make run` (the notebook) writes them")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or saved.get("norm") != flag:
            found = saved.get("norm") if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"{path} holds weights for norm {found!r}, not {flag!r}")
        net = cls(flag, groups=saved.get("groups") or DEFAULT_GROUPS, layout=saved.get("layout", LAYOUT),
                  activation=saved.get("activation", "relu"))
        try:
            net.load_state_dict(saved["state_dict"])
        except RuntimeError as error:
            raise ValueError(f"{path} does not fit Net({flag!r}, layout={net.layout!r}): "
                             f"{str(error).splitlines()[1].strip()}") from None
        net.info = {key: value for key, value in saved.items() if key != "state_dict"}
        return net.eval()

    def save_pretrained(self, path, **info):
        """Save the weights with the norm, groups, layout and activation Net.pretrained needs, and
        `info` (e.g. test_accuracy, commit, config)."""
        torch.save({"norm": self.norm, "groups": self.groups, "layout": self.layout, "activation": self.activation,
                    **info,
                    "state_dict": {key: value.detach().cpu() for key, value in self.state_dict().items()}}, path)

    def forward(self, x):
        x = self.features(x)
        x = x.mean(dim=(2, 3), keepdim=True)  # global average pool: (N, C, 1, 1)
        x = self.head(x).flatten(1)           # (N, 10)
        return F.log_softmax(x.float(), dim=1)


def count_parameters(model):
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
