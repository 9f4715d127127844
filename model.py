"""The network compared here: one small MNIST CNN, three normalizations.

    from model import Net
    net = Net("B")             # BatchNorm  (trained with the L1 penalty, see utils.py)
    net = Net("L")             # LayerNorm
    net = Net("G", groups=7)   # GroupNorm (groups must divide 14)
    net = Net.pretrained("G")  # the notebook's trained GroupNorm network, in eval mode

The axes each norm normalizes over, for an activation of shape (N, C, H, W):
- BatchNorm ('B'): (N, H, W) per channel, across the batch; eval mode uses the running averages
  kept in training instead, so call model.eval() to test.
- LayerNorm ('L'): (C, H, W) per sample, as GroupNorm(1, C): Ba et al.'s definition applied to a conv
  layer, and GroupNorm's limiting case (ConvNeXt's per-pixel LayerNorm2d, over C only, is the other
  reading; nn.LayerNorm([C, H, W]) would fix the spatial size).
- GroupNorm ('G'): (C/groups, H, W) per sample and group of channels.
LayerNorm and GroupNorm have a per-channel scale and shift, and no running statistics. This file
imports torch and Python's standard library only.
"""

import copy
import hashlib
import os

import torch
from torch import nn

WIDTH = 14          # channels of every block
DEFAULT_GROUPS = 2  # GroupNorm: 7 channels per group (the divisors of 14 are 1, 2, 7, 14)
NORMS = {"B": "BatchNorm", "L": "LayerNorm", "G": "GroupNorm"}
_ALIASES = {"b": "B", "bn": "B", "batch": "B", "batchnorm": "B", "l": "L", "ln": "L", "layer": "L",
            "layernorm": "L", "g": "G", "gn": "G", "group": "G", "groupnorm": "G"}


def norm_flag(norm):
    """The canonical flag 'B', 'L' or 'G' for a flag or alias (case-insensitive)."""
    key = norm.strip().lower().replace("_", "").replace("-", "") if isinstance(norm, str) else None
    if key not in _ALIASES:
        raise ValueError(f"norm={norm!r} is not a known normalization; use one of 'B' (BatchNorm), "
                         f"'L' (LayerNorm) or 'G' (GroupNorm), or an alias: {sorted(_ALIASES)}")
    return _ALIASES[key]


def check_groups(groups):
    """`groups` if it is a positive int dividing WIDTH; else ValueError listing the valid ones."""
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or WIDTH % groups:
        raise ValueError(f"groups={groups!r}: GroupNorm needs a number of groups dividing the {WIDTH} "
                         f"channels, one of {[g for g in range(1, WIDTH + 1) if WIDTH % g == 0]}")
    return groups


class LayerNorm(nn.GroupNorm):
    """LayerNorm for conv activations: nn.GroupNorm(1, C), named so that summaries say LayerNorm."""

    def __init__(self, channels):
        super().__init__(1, channels)


def make_norm(norm, channels, groups=DEFAULT_GROUPS):
    """The normalization layer chosen by the flag `norm`."""
    flag = norm_flag(norm)
    if flag == "B":
        return nn.BatchNorm2d(channels)
    return LayerNorm(channels) if flag == "L" else nn.GroupNorm(groups, channels)


def block(in_channels, out_channels, norm, padding=1):
    """3x3 convolution (no bias: the norm's shift replaces it) -> norm(channels) -> SiLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
                         norm(out_channels), nn.SiLU(inplace=True))


class Net(nn.Module):
    """MNIST classifier, 7,850 parameters for each norm. norm: 'B', 'L' or 'G' (or an alias such
    as 'bn'); groups: GroupNorm's (1, 2, 7 or 14); norm_layer(channels): a layer to use in place of
    the flag's (the batch-size study's ghost batches, ghost.py). forward((N, 1, 28, 28) normalized
    images) -> (N, 10) log-probabilities.

    Designed for accuracy and CPU speed together: a space-to-depth stem (2x2 patches become 4 channels)
    lets the first 3x3 convolution see 6x6 pixels without a 28x28 activation, slow on a CPU; two unpadded
    blocks from 7x7 to 3x3 leave no zero borders for the per-sample norms to average in.
    """

    def __init__(self, norm="B", groups=DEFAULT_GROUPS, norm_layer=None):
        super().__init__()
        self.norm = norm_flag(norm)
        self.groups = check_groups(groups) if self.norm == "G" else None
        norm_layer = norm_layer or (lambda channels: make_norm(self.norm, channels, groups))
        self.features = nn.Sequential(
            nn.PixelUnshuffle(2),                           # (N, 4, 14, 14)
            block(4, WIDTH, norm_layer),                    # (N, 14, 14, 14)
            block(WIDTH, WIDTH, norm_layer),
            nn.MaxPool2d(2),                                # (N, 14, 7, 7)
            block(WIDTH, WIDTH, norm_layer, padding=0),     # (N, 14, 5, 5)
            block(WIDTH, WIDTH, norm_layer, padding=0),     # (N, 14, 3, 3)
            block(WIDTH, WIDTH, norm_layer),
        )
        self.head = nn.Conv2d(WIDTH, 10, 1)  # on the globally averaged features

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3), keepdim=True)  # global average pool: (N, 14, 1, 1)
        return self.head(x).flatten(1).log_softmax(dim=1)  # (N, 10)

    @classmethod
    def pretrained(cls, norm="B", path=None):
        """The trained net of a norm that `make run` committed (or save_pretrained wrote at `path`), in eval
        mode, its provenance in .info; input (x/255 - 0.1307) / 0.3081. A missing file raises FileNotFoundError;
        weights failing their sha256, not finite or of another norm raise ValueError naming the file and a fix."""
        flag = norm_flag(norm)
        path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), "Images", "notebook", f"net_{flag}.pt")
        saved = load_checked(path, f"restore it (`git checkout -- {os.path.relpath(path)}`) or retrain it (`make run`)")
        if saved.get("norm") != flag:
            raise ValueError(f"{path} holds the weights of norm {saved.get('norm')!r}, not {flag!r}")
        net = cls(flag, groups=saved.get("groups") or DEFAULT_GROUPS)
        try:
            net.load_state_dict(saved["state_dict"])
        except RuntimeError as error:
            raise ValueError(f"{path} does not fit Net({flag!r}): {str(error).splitlines()[1].strip()}") from None
        net.info = {key: value for key, value in saved.items() if key not in ("state_dict", "sha256")}
        return net.eval()

    def save_pretrained(self, path, **info):
        """Save the weights with their sha256, the norm and groups, and `info` (test_accuracy, ...)."""
        state = {key: value.detach().cpu() for key, value in self.state_dict().items()}
        torch.save({"norm": self.norm, "groups": self.groups, **info, "state_dict": state,
                    "sha256": state_digest(state)}, path)

    def fused(self):
        """An eval-mode copy with every BatchNorm (at inference a fixed affine map) folded into the conv before it;
        LayerNorm and GroupNorm, whose statistics are each image's own, cannot fold: their copies are unchanged."""
        net = copy.deepcopy(self).eval()
        for layer in net.features:
            if isinstance(layer, nn.Sequential) and isinstance(layer[1], nn.BatchNorm2d):
                conv, bn = layer[0], layer[1]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
                with torch.no_grad():
                    conv.weight.mul_(scale.view(-1, 1, 1, 1))
                    conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
                layer[1] = nn.Identity()
        return net


# ---------------------------------------------------------------------------------------
# Parameters, and weights that prove themselves
# ---------------------------------------------------------------------------------------

def count_parameters(model):  # the trainable ones
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def state_digest(state_dict):
    """sha256 over a state_dict's names, dtypes, shapes and bytes: a flipped bit changes it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_state(state_dict, sha256):
    """Why a saved state_dict must not be used (no sha256, a wrong one, a non-finite weight), or None."""
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(t) for t in state_dict.values()):
        return "the weights are not a state_dict of tensors"
    if sha256 != state_digest(state_dict):
        return "the weights do not match their sha256 (the file is damaged)" if sha256 else "the weights carry no sha256"
    bad = [name for name, t in state_dict.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    return f"non-finite weights in {', '.join(bad)}" if bad else None


def load_checked(path, fix):
    """The dict saved at `path`, its state_dict checked; else an error naming the file, the problem and `fix`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file; {fix}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or not a torch file
        raise ValueError(f"{path} cannot be read ({type(error).__name__}: {str(error).strip()[:200]}); {fix}") from None
    problem = check_state(saved.get("state_dict"), saved.get("sha256")) if isinstance(saved, dict) else "not a dict"
    if problem:
        raise ValueError(f"{path}: {problem}; {fix}")
    return saved
