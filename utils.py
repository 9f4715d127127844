"""Training loops (with the L1 penalty), saved results and plots for the normalization comparison.

Data flows one way: RunConfig -> MNIST tensors on the device -> train() -> per-epoch history
-> save_results() -> the plot_* helpers, which take histories and return Figures.

    import utils
    model, history = utils.run("L", epochs=20, seed=1)   # one run; many at once: sweeps.sweep
"""

import contextlib
import dataclasses
import io
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from config import RunConfig, resolve_device
from cuda_graph import GraphStep
from data import MNIST_MEAN, MNIST_STD, check_tensors, load_tensors
from files import atomic_write, check_replaceable, markdown_table, read_csv, short_commit, write_csv, write_json
from model import NORMS, WIDTH, count_parameters

# What a training run computes, as a number: part of every run's cache key (sweeps.py), so editing
# comments or plots retrains nothing. When tests/test_golden.py fails, bump it and run that file with --write.
TRAINING_VERSION = 1
HISTORY_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds")

# ---------------------------------------------------------------------------------------
# Training: one step, one epoch, one run
# ---------------------------------------------------------------------------------------

def augment(x, rotation, translation, generator, elastic=0.0):
    """Random rotation (degrees), shift (fraction of the size) and elastic distortion (Simard et al. 2003:
    a random field smoothed by a 4 px Gaussian, times `elastic` px) of (N, 1, H, W), in one sampling pass."""
    n, _, height, width = x.shape
    angle = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * math.radians(rotation)
    shift = (torch.rand(n, 2, device=x.device, generator=generator) * 2 - 1) * (2 * translation)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, x.shape, align_corners=False)  # (N, H, W, 2)
    if elastic:
        field = blur(torch.rand(n * 2, 1, height, width, device=x.device, generator=generator) * 2 - 1, 4.0)
        grid = grid + field.view(n, 2, height, width).permute(0, 2, 3, 1) * (elastic * 2 / width)
    # Pixels shifted in from outside are background: sample x - background, add it back.
    background = (0 - MNIST_MEAN) / MNIST_STD
    return F.grid_sample(x - background, grid, align_corners=False) + background


def blur(x, sigma):
    """Gaussian blur (truncated at 3 sigma, zeros beyond the border) as two small matrix products,
    which a CPU runs far faster than a conv2d with a long kernel on one channel."""
    radius = math.ceil(3 * sigma)
    total = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma ** 2)).sum()

    def matrix(size):  # matrix[i, j] = kernel[i - j]
        offset = torch.arange(size, device=x.device, dtype=x.dtype)
        offset = offset[:, None] - offset[None, :]
        return torch.exp(-offset ** 2 / (2 * sigma ** 2)) * (offset.abs() <= radius) / total
    return matrix(x.shape[-2]) @ x @ matrix(x.shape[-1]).T


def l1_penalty(model):
    """Sum of |w| over the convolution weights (not biases, not norm parameters)."""
    return sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def training_loss(model, log_probs, labels, l1_lambda):
    """(objective: cross-entropy + l1_lambda * sum|w| over the conv weights, cross-entropy)."""
    loss = F.nll_loss(log_probs, labels)
    return (loss + l1_lambda * l1_penalty(model) if l1_lambda else loss), loss


def forward_backward(model, images, labels, config):
    """Gradients into .grad (None or zero before); returns (log-probabilities, cross-entropy without L1)."""
    log_probs = model(images)
    objective, loss = training_loss(model, log_probs, labels, config.l1_lambda)
    objective.backward()
    return log_probs, loss


def train_epoch(model, x, y, step, scheduler, config, generator, augmented=True):
    """One pass in shuffled batches; returns (mean cross-entropy without L1, accuracy %, the first step
    whose loss was not finite or -1) of the training batches as trained (augmented or not)."""
    model.train()
    n = len(x)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    first_bad = torch.full((), -1, device=x.device, dtype=torch.long)  # read once, at the end
    order = torch.randperm(n, device=x.device, generator=generator)
    for number, start in enumerate(range(0, n, config.batch_size)):
        index = order[start:start + config.batch_size]
        images = (augment(x[index], config.rotation, config.translation, generator, config.elastic)
                  if augmented else x[index])
        labels = y[index]
        log_probs, loss = step(images, labels)
        scheduler.step()
        loss_sum += loss.detach() * len(index)
        correct += (log_probs.argmax(1) == labels).sum()
        first_bad = torch.where(torch.isfinite(loss) | (first_bad >= 0), first_bad, number)
    return loss_sum.item() / n, 100.0 * correct.item() / n, int(first_bad)


@torch.no_grad()
def predict(model, x, batch_size=2500):
    """Log-probabilities (N, 10) in eval mode and fp32, in large batches."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model, x, y, batch_size=2500):
    """(mean cross-entropy, accuracy %), summed over the set, then divided by its size."""
    log_probs = predict(model, x, batch_size)
    loss = F.nll_loss(log_probs, y, reduction="sum").item() / len(x)
    return loss, 100.0 * (log_probs.argmax(1) == y).sum().item() / len(x)


def setup(config, device, steps_per_epoch):
    """(model, optimizer, OneCycle schedule, step(images, labels) -> (log-probabilities, cross-entropy),
    the generator of the shuffling and augmentation), seeded."""
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model = config.net().to(device)
    # on a GPU, one fused kernel per step; the CPU keeps the reference implementation
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay,
                                  **({"fused": True} if device.type == "cuda" else {}))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch)

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        out = forward_backward(model, images, labels, config)
        optimizer.step()
        return out

    if config.cuda_graph and device.type == "cuda":
        step = GraphStep(step, lambda images, labels: forward_backward(model, images, labels, config),
                         optimizer, config.batch_size)
    return model, optimizer, scheduler, step, generator


class TrainingDiverged(RuntimeError):
    """A run that learns nothing (learning_failure), or whose loss stopped being finite."""


UNIFORM_LOSS = math.log(10)  # the cross-entropy of guessing all 10 classes equally


def learning_failure(history, epoch, steps):
    """Why the run learns nothing, or None; the accuracy is judged only past the first epoch and 200 steps
    (tiny runs take fewer)."""
    train_loss, test_loss = history["train_loss"][-1], history["test_loss"][-1]
    if train_loss > 3 * UNIFORM_LOSS:
        return f"the training loss averaged {train_loss:.3g} in epoch {epoch}, worse than 3x a uniform guess's"
    if not math.isfinite(test_loss) or test_loss > 10 * UNIFORM_LOSS:
        return f"the test loss was {test_loss:.3g} after epoch {epoch}, worse than 10x a uniform guess's"
    if epoch > 1 and steps >= 200 and history["train_accuracy"][-1] <= 20:
        return f"the training accuracy was {history['train_accuracy'][-1]:.1f}% in epoch {epoch}, at chance (10%)"
    return None


def epoch_failure(config, history, epoch, steps_per_epoch, bad_step):
    """The TrainingDiverged of a run whose loss was not finite at batch `bad_step` of the epoch (0-based; < 0: none)
    or that learns nothing (learning_failure); else None."""
    failure = (f"the training loss became NaN or infinite at epoch {epoch}, step {bad_step + 1} of {steps_per_epoch}"
               if bad_step >= 0 else learning_failure(history, epoch, epoch * steps_per_epoch))
    return TrainingDiverged(f"{config.label}, seed {config.seed}: {failure}; the run learns nothing and nothing of it "
                            f"was kept. Lower max_lr (now {config.max_lr:g}) or check the data.") if failure else None


def train(config, data, device, progress=True, on_epoch=None):
    """Train on data = (train_x, train_y, test_x, test_y), already on `device`; returns (model, history),
    per-epoch lists of HISTORY_KEYS (accuracies in %, lr at the epoch's last step, seconds of train + test).
    on_epoch(epoch, history) is called after each epoch. Raises TrainingDiverged for a run that learns nothing
    (learning_failure); nothing of it is returned."""
    check_tensors(data)
    train_x, train_y, test_x, test_y = data
    steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
    model, optimizer, scheduler, step, generator = setup(config, device, steps_per_epoch)
    history = {key: [] for key in HISTORY_KEYS}
    bar = tqdm(range(1, config.epochs + 1), desc=f"{config.label}, seed {config.seed}", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        train_loss, train_accuracy, bad_step = train_epoch(model, train_x, train_y, step, scheduler, config,
                                                           generator, epoch <= config.epochs - config.clean_epochs)
        test_loss, test_accuracy = evaluate(model, test_x, test_y, config.eval_batch_size)
        for key, value in zip(history, (train_loss, train_accuracy, test_loss, test_accuracy,
                                        float(optimizer.param_groups[0]["lr"]), time.perf_counter() - start)):
            history[key].append(value)
        error = epoch_failure(config, history, epoch, steps_per_epoch, bad_step)
        if error:
            raise error
        if progress:
            bar.write(epoch_line(config, history, epoch))
        if on_epoch:
            on_epoch(epoch, history)
    return model, history


def epoch_line(config, history, epoch):
    h = {key: values[epoch - 1] for key, values in history.items()}
    held_out = "val" if config.validation else "test"
    return (f"{config.norm} seed {config.seed} epoch {epoch:2d}/{config.epochs}: train loss {h['train_loss']:.4f} "
            f"acc {h['train_accuracy']:.2f}% | {held_out} loss {h['test_loss']:.4f} acc "
            f"{h['test_accuracy']:.2f}% | {h['seconds']:.1f} s")


def run(norm, device=None, root="data", data=None, progress=True, **settings):
    """(model, history) of one run; settings are RunConfig fields (e.g. epochs=20, seed=1, train_limit=2000).
    `data` passes (train_x, train_y, test_x, test_y), so several runs load MNIST once; else it is loaded
    from `root`, with the limits and the validation split applied."""
    config, device = RunConfig.build(norm=norm, **settings), resolve_device(device)
    return train(config, run_data(config, device, root, data), device, progress)


def run_data(config, device, root="data", data=None):
    if data is None:
        return load_tensors(root, device, config.train_limit, config.test_limit, config.validation)
    check_selection(config)
    return tuple(t.to(device) for t in data)


def check_selection(config):
    given = [name for name in ("train_limit", "test_limit", "validation") if getattr(config, name)]
    if given:
        raise ValueError(f"{', '.join(given)} cannot be combined with data=: slice the tensors you pass "
                         "instead, or leave out data= to load MNIST with them")


# ---------------------------------------------------------------------------------------
# Saved results
# ---------------------------------------------------------------------------------------

def save_results(histories, configs, params, images_dir, info):
    """Write history.csv and summary.json atomically; return the summary. histories: {norm: {seed: history}};
    configs: {norm: RunConfig of its first seed}; params: {norm: count}; info: files.run_info()."""
    rows = [[norm, seed, epoch, *(f"{v:.6g}" for v in values)]
            for norm, by_seed in histories.items() for seed, history in by_seed.items()
            for epoch, values in enumerate(zip(*(history[k] for k in HISTORY_KEYS)), start=1)]
    summary = {**summarize(histories, configs, params), "run": info}
    json.dumps(summary, allow_nan=False)  # strict JSON: a NaN raises here, before either file is written
    write_csv(f"{images_dir}/history.csv", ["norm", "seed", "epoch", *HISTORY_KEYS], rows)
    write_json(f"{images_dir}/summary.json", summary)
    return summary


def summarize(histories, configs, params):
    """{norm: {name, config, params, final_*, seconds, ...}}; final: the last epoch, as a mean over seeds."""
    summary = {}
    for norm, by_seed in histories.items():
        runs = list(by_seed.values())
        final_accuracy = [h["test_accuracy"][-1] for h in runs]
        summary[norm] = {
            "name": configs[norm].label,
            "config": {k: v for k, v in dataclasses.asdict(configs[norm]).items() if k != "seed"},
            "params": params[norm],
            "seeds": list(by_seed),
            "epochs": len(runs[0]["test_accuracy"]),
            "final_test_accuracy": float(np.mean(final_accuracy)),
            "final_test_accuracy_std": float(np.std(final_accuracy, ddof=1)) if len(runs) > 1 else 0.0,
            "final_test_accuracy_per_seed": final_accuracy,
            "final_test_loss": float(np.mean([h["test_loss"][-1] for h in runs])),
            "final_train_accuracy": float(np.mean([h["train_accuracy"][-1] for h in runs])),
            "seconds": float(np.mean([sum(h["seconds"]) for h in runs])),
        }
    return summary


def load_histories(path, maker=None):
    """history.csv as {norm: {seed: history}}."""
    histories = {}
    for row in read_csv(path, maker):
        history = histories.setdefault(row["norm"], {}).setdefault(row["seed"], {k: [] for k in HISTORY_KEYS})
        for key in HISTORY_KEYS:
            history[key].append(float(row[key]))
    return histories


def model_summary(config):
    """torchsummary's layer table for the Net of a RunConfig (computed on the CPU)."""
    from torchsummary import summary
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary(config.net(), (1, 28, 28), device="cpu")
    return out.getvalue()


@torch.no_grad()
def find_misclassified(model, x, y, count=10, batch_size=2500):
    """The `count` most confident mistakes, [{index, predicted, actual, probability of the prediction}],
    highest probability first, ties by index."""
    probability, predicted = predict(model, x, batch_size).exp().max(1)  # (N,) each
    wrong = (predicted != y).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: (-probability[i].item(), i))
    return [{"index": i, "predicted": int(predicted[i]), "actual": int(y[i]),
             "probability": round(float(probability[i]), 4)} for i in wrong[:count]]


# What the notebook writes into its folder (IMAGES_DIR): it replaces a folder holding these only.
NOTEBOOK_FILES = {"history.csv", "summary.json", "results.md", "misclassified.json", "timing.json", "test_loss.png",
                  "test_accuracy.png", *(f"{kind}_{n}.{ext}" for n in NORMS for kind, ext in (
                      ("summary", "txt"), ("net", "pt"), ("misclassified", "png"), ("curves", "png")))}


def check_notebook_parameters(seeds, images_dir):
    """Raise ValueError, before anything is trained or written, for a SEEDS that is not a list of whole
    numbers or an IMAGES_DIR holding files the notebook does not write (the studies' results)."""
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(f"SEEDS={seeds!r} must be a list of whole numbers, e.g. [1] or [1, 2, 3] (with papermill: "
                         "-y 'SEEDS: [1, 2]'; -p passes a string)")
    check_replaceable(images_dir, NOTEBOOK_FILES, "the notebook")


def results_table(summary, notebook_seconds=None):
    """The notebook's results as Markdown: one row per variant of its summary.json, and what made them."""
    norms = [n for n in NORMS if n in summary]
    rows = [[summary[n]["name"], f"{summary[n]['params']:,}", f"{summary[n]['final_test_accuracy']:.2f}%"
             + (f" ± {summary[n]['final_test_accuracy_std']:.2f}" if len(summary[n]["seeds"]) > 1 else ""),
             f"{summary[n]['final_test_loss']:.4f}", f"{summary[n]['seconds']:.0f} s"] for n in norms]
    seeds = ", ".join(map(str, summary[norms[0]]["seeds"]))
    table = markdown_table([f"variant (seed {seeds})", "params", "final test accuracy", "final test loss",
                            "training time"], rows)
    run = summary["run"]
    made = f"at commit `{short_commit(run['git_commit'])}` on {run['device']} (torch {run['torch']})"
    if notebook_seconds:
        p = run["parameters"]
        trained, runs = p.get("trained_runs", "?"), p.get("runs", "?")
        made += f" in {notebook_seconds:.0f} s, training " + (f"its {runs} runs" if trained == runs != "?" else
                                                              f"{trained} of its {runs} runs and loading the rest "
                                                              f"from {p.get('runs_dir')}/")
    return (f"{table}\nFinal = the last epoch ({summary[norms[0]]['epochs']}); training time: each run's own. "
            f"The notebook ran {made}.\n")


def discussion_table(histories, mistakes, labels):
    """Per variant (first seed): its accuracies, the largest epoch-to-epoch move of the test accuracy in
    the second half, and how many of its most confident mistakes another model also makes."""
    rows = []
    for norm, by_seed in histories.items():
        history = next(iter(by_seed.values()))
        accuracy = history["test_accuracy"]
        moves = np.abs(np.diff(accuracy[len(accuracy) // 2:]))
        others = {m["index"] for other in mistakes if other != norm for m in mistakes[other]}
        rows.append([labels[norm], f"{accuracy[0]:.2f}%", f"{accuracy[-1]:.2f}%",
                     f"{history['train_accuracy'][-1]:.2f}%", f"{moves.max():.2f}" if len(moves) else "-",
                     f"{sum(m['index'] in others for m in mistakes[norm])} of {len(mistakes[norm])}"])
    return markdown_table(["variant", "test accuracy, epoch 1", "final test accuracy", "final training accuracy",
                           "largest move between epochs, second half (points)", "mistakes another model shares"],
                          rows)


def recipe_markdown(up=""):
    """The network and the recipe, as Markdown bullets, from model.py and RunConfig's defaults; `up`: the
    path from the document's folder to the repository's root ("../" from studies/)."""
    c, g = RunConfig(), RunConfig(norm="G")
    params = count_parameters(c.net())
    return (f"- **Network** ([`model.py`]({up}model.py), torch only): a space-to-depth stem (2x2 patches become 4 "
            f"channels), five 3x3 convolutions of {WIDTH} channels (two at 14x14, max pooling, two unpadded "
            f"from 7x7 to 3x3, one at 3x3), each followed by the norm and SiLU, global average pooling and a 1x1 "
            f"convolution to 10 classes: {params:,} parameters for every norm. BatchNorm normalizes over (N, H, W) "
            f"per channel, LayerNorm over (C, H, W) per image, GroupNorm over (C/{g.groups}, H, W) per image "
            "and group.\n"
            f"- **Recipe** (`RunConfig`'s defaults): AdamW with weight decay {c.weight_decay:g}, OneCycle to lr "
            f"{c.max_lr:g}, batch {c.batch_size}, {c.epochs} epochs; random rotation up to {c.rotation:g}°, shift up "
            f"to {c.translation * 28:.1f} px and elastic distortion (Simard et al.: α = {c.elastic:g}, smoothed over "
            f"4 px), none in the last {c.clean_epochs} epochs; cross-entropy plus, for BatchNorm only, λ·Σ|w| over "
            f"the convolution weights with λ = {RunConfig(norm='B').l1_lambda:g}.\n")


# ---------------------------------------------------------------------------------------
# Plots: each takes saved results and returns a matplotlib Figure; the caller saves it.
# ---------------------------------------------------------------------------------------

def save_figure(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    atomic_write(path, buffer.getvalue())


def _plot_test_metric(histories, key, ylabel, title, labels=None):
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for norm, by_seed in histories.items():
        values = np.array([h[key] for h in by_seed.values()])  # (seeds, epochs)
        epochs = np.arange(1, values.shape[1] + 1)
        mean = values.mean(0)
        label = (labels or {}).get(norm, norm)
        label += f", mean ± sd of {len(values)} seeds" if len(values) > 1 else ""
        line, = ax.plot(epochs, mean, marker="o", markersize=3, label=label)
        if len(values) > 1:
            sd = values.std(0, ddof=1)
            ax.fill_between(epochs, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig, ax


def plot_test_loss(histories, labels=None):
    """Graph 1: the test loss per epoch of every variant on one axes (log scale).
    histories: {norm: {seed: history}}; labels: {norm: legend label}."""
    fig, ax = _plot_test_metric(histories, "test_loss", "test loss (mean cross-entropy, log scale)",
                                "Graph 1: test loss", labels)
    ax.set_yscale("log")
    return fig


def plot_test_accuracy(histories, labels=None):
    """Graph 2; the y range starts where the later epochs are, so the variants' differences are visible."""
    fig, ax = _plot_test_metric(histories, "test_accuracy", "test accuracy (%)", "Graph 2: test accuracy",
                                labels)
    runs = [h["test_accuracy"] for by_seed in histories.values() for h in by_seed.values()]
    values = np.concatenate(runs)
    later = np.concatenate([accuracy[len(accuracy) // 4:] for accuracy in runs])
    low, high = later.min() - 0.1, values.max() + 0.05
    if values.min() < low:
        ax.set_title(f"Graph 2: test accuracy (y axis cut at {low:.2f}%; early epochs lie below)")
    ax.set_ylim(low, min(high, 100.0))
    return fig


def plot_curves(history, title):
    """Train and test loss and accuracy of one run (train on the batches as trained: augmented, except in
    the last RunConfig.clean_epochs epochs)."""
    import matplotlib.pyplot as plt
    fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs = np.arange(1, len(history["test_loss"]) + 1)
    for split in ("train", "test"):
        loss_ax.plot(epochs, history[f"{split}_loss"], marker="o", markersize=3, label=split)
        accuracy_ax.plot(epochs, history[f"{split}_accuracy"], marker="o", markersize=3, label=split)
    loss_ax.set(xlabel="epoch", ylabel="loss (mean cross-entropy, log scale)", yscale="log", title="loss")
    accuracy_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_misclassified(images, mistakes, title):
    """Misclassified images in 5 rows and 2 columns. images: (N, 28, 28), e.g. test_x[:, 0];
    mistakes: find_misclassified()."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(5, 2, figsize=(4.6, 11))
    for ax, mistake in zip(axes.flat, mistakes):
        ax.imshow(images[mistake["index"]].cpu().numpy(), cmap="gray_r")
        ax.set_title(f"predicted {mistake['predicted']} (p={mistake['probability']:.2f})\n"
                     f"actual {mistake['actual']}   [test #{mistake['index']}]", fontsize=9)
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    fig.suptitle(f"{title}\n{len(mistakes)} most confident mistakes on the test set\n"
                 "p = the model's probability for its prediction", fontsize=10)
    fig.tight_layout()
    return fig
