"""Many runs as one network: M runs that differ only in their seed, trained at once.

    import grouped
    results = grouped.train_group([RunConfig(norm="L", seed=s) for s in range(1, 21)], data, device)
    model, history = results[0]   # as utils.train returns them, for seed 1

M Nets side by side are one network whose convolutions have groups=M, run m owning the m-th block of
every layer's channels. BatchNorm is per channel already (each run's statistics are its own batch's),
LayerNorm becomes GroupNorm(M, M*C) and GroupNorm(g) GroupNorm(M*g, M*C), so nothing mixes between runs:
the loss is the sum of the runs' losses and AdamW is elementwise, so each run's gradients and updates are
its own Net's, up to float rounding. Each run keeps its seed's initial weights, generator and schedule.

Why: a 7,850-parameter network leaves a GPU almost idle, each step being hundreds of tiny kernels; M runs
in one network are the same kernels on M times the channels. On one CPU thread the grouped network is
slower than the M networks apart, so the CPU keeps one run per process.
"""

import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import utils
from cuda_graph import CapturedStep, OneCycleTables
from data import check_tensors
from ghost import GhostBatchNorm2d


def widen(module, runs):
    """`runs` copies of `module` side by side, run m on the m-th block of channels (GroupedNet loads the weights)."""
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*(widen(layer, runs) for layer in module))
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(module.in_channels * runs, module.out_channels * runs, module.kernel_size, module.stride,
                         module.padding, groups=module.groups * runs, bias=module.bias is not None)
    if isinstance(module, GhostBatchNorm2d):  # before BatchNorm2d, its base
        return GhostBatchNorm2d(module.num_features * runs, module.ghost)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(module.num_features * runs, module.eps, module.momentum)
    if isinstance(module, nn.GroupNorm):  # model.LayerNorm included: GroupNorm(1, C)
        return nn.GroupNorm(module.num_groups * runs, module.num_channels * runs, module.eps)
    if isinstance(module, (nn.PixelUnshuffle, nn.MaxPool2d, nn.SiLU)):  # channel by channel already
        return module
    raise TypeError(f"grouped.widen: no grouped form of {type(module).__name__}")


class GroupedNet(nn.Module):
    """M Nets of one norm as one network, with their layer names (its state_dict is theirs concatenated along
    dim 0, run by run). forward((B, M, 28, 28): run m's batch in channel m) -> (B, M, 10) log-probabilities."""

    def __init__(self, nets):
        super().__init__()
        self.runs = len(nets)
        self.features, self.head = widen(nets[0].features, self.runs), widen(nets[0].head, self.runs)
        self.load_runs([net.state_dict() for net in nets])

    def load_runs(self, states):
        """Copy M Nets' state_dicts in (num_batches_tracked, alike in all, from the first)."""
        assert len(states) == self.runs
        self.load_state_dict({key: torch.cat([state[key] for state in states]) if value.dim() else value
                              for key, value in states[0].items()})

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3), keepdim=True)  # global average pool: (B, 14M, 1, 1)
        return F.log_softmax(self.head(x).flatten(1).unflatten(1, (self.runs, -1)), dim=2)  # (B, M, 10)

    def split(self):
        """The M runs' state_dicts, as a plain Net's load_state_dict takes them (running statistics included)."""
        state = self.state_dict()
        return [{key: value.chunk(self.runs)[run].clone() if value.dim() else value.clone()
                 for key, value in state.items()} for run in range(self.runs)]


def check_group(configs):
    """Raise ValueError unless `configs` are RunConfigs alike but for distinct seeds."""
    first = configs[0] if configs else None
    apart = [c for c in configs if c != dataclasses.replace(first, seed=c.seed)]
    if not configs or apart or len({c.seed for c in configs}) < len(configs):
        raise ValueError("train_group trains RunConfigs that differ only in their seeds (distinct ones); "
                         f"got {len(configs)} with {len(apart)} differing otherwise from the first")


def group_loss(net, log_probs, labels, l1_lambda):
    """(objective, each run's cross-entropy (M,)) of log-probabilities (B, M, 10) and labels (B, M): the sum
    over the runs of utils.training_loss's objective (their L1 terms together: l1_penalty of the group)."""
    losses = F.nll_loss(log_probs.transpose(1, 2), labels, reduction="none").mean(0)  # (M,)
    return (losses.sum() + l1_lambda * utils.l1_penalty(net) if l1_lambda else losses.sum()), losses


def evaluate_group(net, x, y, batch_size=2500):
    """Each run's (mean cross-entropy, accuracy %), as utils.evaluate computes them: float64 (M,) each."""
    log_probs = utils.predict(net, x.expand(-1, net.runs, -1, -1), batch_size)  # (N, M, 10)
    labels = y[:, None].expand(-1, net.runs)  # (N, M)
    losses = F.nll_loss(log_probs.transpose(1, 2), labels, reduction="none").sum(0).double() / len(x)
    return losses, 100.0 * (log_probs.argmax(2) == labels).sum(0).double() / len(x)


def train_group(configs, data, device, progress=False, on_epoch=None):
    """Train RunConfigs alike but for their seeds as one GroupedNet on data = (train_x, train_y, test_x, test_y),
    already on `device`. Returns, per config, (model, history) as utils.train would for it alone (the model a
    plain Net in eval mode; seconds: the whole group's epoch), or the TrainingDiverged utils.train would raise,
    returned so that the other runs are kept. on_epoch(run, epoch, history) is called for each run still
    learning, once all the runs' histories hold the epoch.
    On a GPU with cuda_graph, each step is replayed from a CUDA graph; one synchronisation per epoch."""
    check_group(configs)
    check_tensors(data)
    train_x, train_y, test_x, test_y = data
    config, runs, n = configs[0], len(configs), len(train_x)
    steps_per_epoch = math.ceil(n / config.batch_size)
    nets, generators = [], []
    for c in configs:  # each run's initial weights and stream, as utils.setup makes them
        torch.manual_seed(c.seed)
        nets.append(c.net())
        generators.append(torch.Generator(device=device).manual_seed(c.seed))
    net = GroupedNet(nets).to(device)
    # capturable: AdamW's scalars stay on the device (no synchronisation, eager or captured); one
    # tensor at a time, as foreach would read the tensor beta1 on the host
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.max_lr, weight_decay=config.weight_decay,
                                  foreach=False, capturable=device.type == "cuda")
    schedule = OneCycleTables(optimizer, config.max_lr, config.epochs, steps_per_epoch)
    totals = torch.zeros(3, runs, dtype=torch.float64, device=device)  # per run: loss sum, correct, first bad step
    totals[2] = -1.0  # none yet

    def step(index, augmented):  # index: (M, b) rows of train_x, run by run
        images = torch.cat([utils.augment(train_x[i], c.rotation, c.translation, g, c.elastic) if augmented
                            else train_x[i] for i, c, g in zip(index, configs, generators)], dim=1)  # (b, M, 28, 28)
        labels = train_y[index].T  # (b, M)
        optimizer.zero_grad(set_to_none=True)
        log_probs = net(images)  # (b, M, 10)
        objective, losses = group_loss(net, log_probs, labels, config.l1_lambda)
        objective.backward()
        schedule.apply()
        optimizer.step()
        with torch.no_grad():
            bad = ~torch.isfinite(losses) & (totals[2] < 0)
            totals.add_(torch.stack([losses * len(labels), (log_probs.argmax(2) == labels).sum(0),
                                     bad * (schedule.step - totals[2])]))  # a first bad step: -1 -> the step's number

    step_fn = CapturedStep(step, generators) if device.type == "cuda" and config.cuda_graph else step
    histories = [{key: [] for key in utils.HISTORY_KEYS} for _ in configs]
    results = [None] * runs
    bar = tqdm(range(1, config.epochs + 1), desc=f"{config.label}, seeds {[c.seed for c in configs]}",
               disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        net.train()
        order = torch.stack([torch.randperm(n, device=device, generator=g) for g in generators])  # (M, n)
        for first in range(0, n, config.batch_size):
            step_fn(order[:, first:first + config.batch_size], epoch <= config.epochs - config.clean_epochs)
        loss_sums, correct, bad_steps = totals.tolist()  # the epoch's one synchronisation
        totals[:2], totals[2] = 0.0, -1.0
        test_losses, test_accuracies = (t.tolist() for t in evaluate_group(net, test_x, test_y, config.eval_batch_size))
        seconds = time.perf_counter() - start
        for run, (c, history) in enumerate(zip(configs, histories)):
            if results[run] is not None:
                continue
            for key, value in zip(utils.HISTORY_KEYS, (loss_sums[run] / n, 100.0 * correct[run] / n, test_losses[run],
                                                       test_accuracies[run], schedule.lrs[epoch * steps_per_epoch],
                                                       seconds)):
                history[key].append(value)
            bad = int(bad_steps[run]) - 1 - (epoch - 1) * steps_per_epoch  # this epoch's batch number, or < 0
            results[run] = utils.epoch_failure(c, history, epoch, steps_per_epoch, bad)
        for run, (c, history) in enumerate(zip(configs, histories)):  # once every history holds the epoch
            if results[run] is None and progress:
                bar.write(utils.epoch_line(c, history, epoch))
            if results[run] is None and on_epoch:
                on_epoch(run, epoch, history)
        if all(result is not None for result in results):
            break
    for run, (c, state) in enumerate(zip(configs, net.split())):
        if results[run] is None:
            model = c.net().to(device)
            model.load_state_dict(state)
            results[run] = (model.eval(), histories[run])
    return results
