"""Ghost batch normalization: the batch-size study's instrument (studies/batch_size.py).

    from ghost import GhostBatchNorm2d
    net = Net("B", norm_layer=lambda channels: GhostBatchNorm2d(channels, 8))  # RunConfig(norm_batch=8).net()

BatchNorm's statistics from groups of k images while the optimizer's batch stays the same, so the
normalization batch varies alone. This file imports torch only.
"""

import torch
from torch import nn


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics come from ghost batches: consecutive groups of `ghost`
    images of the batch (the last may be smaller), each normalized by its own mean and variance;
    the running averages follow the groups' mean statistics. Eval mode is nn.BatchNorm2d's."""

    def __init__(self, channels, ghost):
        super().__init__(channels)
        self.ghost = ghost

    def forward(self, x):
        if not self.training or len(x) <= self.ghost:
            return super().forward(x)
        full = len(x) // self.ghost * self.ghost
        groups = [x[:full].unflatten(0, (-1, self.ghost))] + ([x[full:].unsqueeze(0)] if full < len(x) else [])
        normalized, means, variances = [], [], []
        for group in groups:  # (groups, images, C, H, W)
            mean, var = group.mean(dim=(1, 3, 4), keepdim=True), group.var(dim=(1, 3, 4), unbiased=False, keepdim=True)
            normalized.append(((group - mean) / torch.sqrt(var + self.eps)).flatten(0, 1))
            size = group[0].numel() / group.shape[2]  # values per channel in one group
            means.append(mean.flatten(1))
            variances.append(var.flatten(1) * size / (size - 1))  # unbiased, as BatchNorm keeps it
        with torch.no_grad():
            self.num_batches_tracked += 1  # momentum None: a cumulative average, as in nn.BatchNorm2d
            weight = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
            self.running_mean.lerp_(torch.cat(means).mean(0), weight)
            self.running_var.lerp_(torch.cat(variances).mean(0), weight)
        return torch.cat(normalized) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
