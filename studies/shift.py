"""When does the norm matter? Test images that differ from the training images.

    python -m studies.shift        # the seeds study's trained runs (from runs/, trained if missing)

BatchNorm normalizes test images with running statistics fixed during training; LayerNorm and
GroupNorm use each image's own statistics. Each trained model is scored on deterministic
corruptions of the MNIST test set, made with torch operations on the [0, 1] pixels before the
usual normalization. "BatchNorm + AdaBN" is the BatchNorm model with its running statistics
recomputed on the corrupted test set (Li et al. 2016; Schneider et al. 2020), the known remedy.
Each model's scores are kept beside its run in runs/, so a second call reads them.

Writes, in Images/: shift.csv (norm, seed, corruption, severity, test_accuracy; norm "B+AdaBN" for
the remedy), shift.json (what produced it), shift.png and the tables tables/shift.md,
shift_paired.md, shift_table.md and shift_full.md.
"""

import copy
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

import data as mnist
import utils
from files import markdown_table, read_csv, read_json, write_csv, write_json
from model import NORMS
from studies import common, stats

TABLE_NAMES = ("shift.md", "shift_paired.md", "shift_table.md", "shift_full.md")  # in Images/tables/
RESULTS = "shift.csv"  # in Images/: without it the study has not run
MAKER = "python -m studies.shift"
SCORING_VERSION = 1  # bump when corrupt(), adapt_batchnorm() or the scoring change what a model scores
# corruption -> severities, in its own unit (see corrupt()); "none" is the clean test set.
CORRUPTIONS = {
    "none": [0],
    "rotation": [15, 30, 45],        # degrees (training saw up to 7)
    "shift": [3, 5],                 # pixels, in a random direction (training saw up to 1.4)
    "scale": [0.7, 1.3],             # zoom factor about the centre
    "noise": [0.1, 0.3, 0.5],        # std of Gaussian noise added to the [0, 1] pixels
    "blur": [1.0, 1.5],              # std of a Gaussian blur, pixels
    "contrast": [0.5, 0.2],          # pixels pulled toward the image mean by this factor
    "brightness": [0.3, 0.6],        # added to the [0, 1] pixels, then clipped
    "invert": [1],                   # 1 - x: white digits become dark on white
}
MODELS = {"B": f"{NORMS['B']} + L1", "L": NORMS["L"], "G": NORMS["G"], "B+AdaBN": f"{NORMS['B']} + AdaBN"}
COLUMNS = ["norm", "seed", "corruption", "severity", "test_accuracy"]


def _warp(x, theta):
    """Apply per-image 2x3 affine maps `theta` (N, 2, 3) to x (N, 1, H, W); black outside."""
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def corrupt(x, corruption, severity):
    """x: (N, 1, 28, 28) pixels in [0, 1]; returns the corrupted copy, the same every call."""
    n = len(x)
    generator = torch.Generator(device=x.device).manual_seed(0)
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=x.device).repeat(n, 1, 1)
    if corruption == "none":
        return x.clone()
    if corruption == "rotation":
        a = math.radians(severity)
        rotation = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0]], device=x.device)
        return _warp(x, rotation.repeat(n, 1, 1))
    if corruption == "shift":
        angle = torch.rand(n, device=x.device, generator=generator) * 2 * math.pi
        theta = identity.clone()
        theta[:, 0, 2], theta[:, 1, 2] = (torch.cos(angle), torch.sin(angle))
        theta[:, :, 2] *= 2 * severity / x.shape[-1]  # pixels -> the grid's [-1, 1] units
        return _warp(x, theta)
    if corruption == "scale":
        return _warp(x, identity / severity * torch.tensor([1.0, 1.0, 0.0], device=x.device))
    if corruption == "noise":
        return (x + severity * torch.randn(x.shape, device=x.device, generator=generator)).clamp(0, 1)
    if corruption == "blur":
        return utils.blur(x, severity)
    if corruption == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return mean + severity * (x - mean)
    if corruption == "brightness":
        return (x + severity).clamp(0, 1)
    if corruption == "invert":
        return 1 - x
    raise ValueError(f"corruption={corruption!r}: use one of {sorted(CORRUPTIONS)}")


@torch.no_grad()
def adapt_batchnorm(model, x, batch_size=2500):
    """AdaBN: a copy of `model` whose BatchNorm running statistics are recomputed on x."""
    adapted = copy.deepcopy(model)
    for module in adapted.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches below
    adapted.train()
    for i in range(0, len(x), batch_size):
        adapted(x[i:i + batch_size])
    return adapted.eval()


def score(models, x, y):
    """[(norm, seed, corruption, severity, accuracy)] of every model on every corruption of x."""
    rows = []
    for corruption, severities in CORRUPTIONS.items():
        for severity in severities:
            images = mnist.normalize(corrupt(x, corruption, severity))
            for (norm, seed), model in models.items():
                rows.append((norm, seed, corruption, severity, utils.evaluate(model, images, y)[1]))
                if norm == "B":
                    adapted = adapt_batchnorm(model, images)
                    rows.append(("B+AdaBN", seed, corruption, severity, utils.evaluate(adapted, images, y)[1]))
    return rows


def score_cached(models, x, y, results_dir, test_limit=None):
    """score(), with each model's rows kept in results_dir (keyed by its weights and SCORING_VERSION)
    so that a second call only reads them; rows in score()'s order."""
    paths = {run: common.score_path(results_dir, *run, model, "shift", SCORING_VERSION, test_limit)
             for run, model in models.items()}
    missing = {run: model for run, model in models.items() if not os.path.exists(paths[run])}
    found = score(missing, x, y) if missing else []
    for run in missing:
        write_json(paths[run], [row for row in found if row[1] == run[1] and row[0] in (run[0], f"{run[0]}+AdaBN")])
    accuracy = {tuple(row[:4]): row[4] for run in models for row in read_json(paths[run])}
    return [(name, seed, corruption, severity, accuracy[(name, seed, corruption, severity)])
            for corruption, severities in CORRUPTIONS.items() for severity in severities for norm, seed in models
            for name in ((norm, "B+AdaBN") if norm == "B" else (norm,))]


def mean_by_seed(rows, model, keep):
    """{seed: mean accuracy of `model` over the rows that keep(row) accepts}."""
    by_seed = {}
    for r in rows:
        if r["norm"] == model and keep(r):
            by_seed.setdefault(r["seed"], []).append(r["test_accuracy"])
    return {seed: float(np.mean(values)) for seed, values in by_seed.items()}


def corrupted(r):
    return r["corruption"] != "none"


def groups(clean):
    """[(name, keep(row))]: each corruption (with the clean set if `clean`), then all corrupted sets."""
    return ([(c, lambda r, c=c: r["corruption"] == c) for c in CORRUPTIONS if clean or c != "none"]
            + [("all corrupted sets", corrupted)])


def accuracy_table(rows, by_severity):
    """Accuracy per corruption (per severity, or averaged over them), mean ± sd over seeds."""
    sets = ([(c, [s]) for c, severities in CORRUPTIONS.items() for s in severities] if by_severity
            else list(CORRUPTIONS.items()))
    lines = []
    for corruption, severities in sets:
        described = [stats.describe(list(mean_by_seed(rows, m, lambda r: r["corruption"] == corruption
                                                       and r["severity"] in severities).values())) for m in MODELS]
        lines.append(["none (clean)" if corruption == "none" else corruption, ", ".join(map(str, severities)),
                      *(f"{d['mean']:.2f} ± {d['sd']:.2f}" for d in described)])
    overall = [np.mean(list(mean_by_seed(rows, m, corrupted).values())) for m in MODELS]
    lines.append(["**all corrupted sets**", "", *(f"**{value:.2f}**" for value in overall)])
    return markdown_table(["corruption", "severity" if by_severity else "severities (mean over them)",
                           *MODELS.values()], lines)


def tables(folder):
    """Each model against BatchNorm + L1, paired by seed, over all corrupted sets and per corruption,
    with the verdict its CI supports: shift.md in brief (a row per model), shift_paired.md in full;
    shift_table.md and shift_full.md: the accuracies."""
    rows = read_csv(os.path.join(folder, "shift.csv"), MAKER)
    *each, overall = groups(clean=False)
    others = list(MODELS)[1:]
    cells = {(m, name): common.compared(mean_by_seed(rows, m, keep), mean_by_seed(rows, "B", keep))
             for m in others for name, keep in [overall, *each]}  # [a − b with its CI, verdict]
    brief = [[f"{MODELS[m]} − BatchNorm", cells[(m, overall[0])][0], *(cells[(m, name)][1] for name, _ in each)]
             for m in others]
    full = [[name, *(cell for m in others for cell in cells[(m, name)])] for name, _ in [overall, *each]]
    info = os.path.join(folder, "shift.json")
    made = (f"\nAccuracy in points, each corruption the mean over its severities, paired over "
            f"{len({r['seed'] for r in rows})} seeds. "
            + (common.provenance(read_json(info, MAKER)) if os.path.exists(info) else "\n"))
    brief_header = ["against BatchNorm + L1", "all corrupted sets (95% CI)", *(name for name, _ in each)]
    full_header = ["test images", *(h for m in others for h in (f"{MODELS[m]} − BatchNorm (95% CI)", "verdict"))]
    return {"shift.md": markdown_table(brief_header, brief, "lr" + "l" * len(each)) + made,
            "shift_paired.md": markdown_table(full_header, full, "l" + "rl" * len(others)) + made,
            "shift_table.md": accuracy_table(rows, False), "shift_full.md": accuracy_table(rows, True)}


def plot(rows):
    """Test accuracy against severity, one panel per corruption, mean ± sd over seeds per model."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.5))
    for ax, corruption in zip(axes.flat, [c for c in CORRUPTIONS if c != "none"]):
        severities = CORRUPTIONS[corruption]
        ticks = range(len(severities))
        for norm, label in MODELS.items():
            values = [[r["test_accuracy"] for r in rows if r["norm"] == norm and r["corruption"] == corruption
                       and r["severity"] == s] for s in severities]
            mean, sd = np.array([np.mean(v) for v in values]), np.array([np.std(v, ddof=1) for v in values])
            line, = ax.plot(ticks, mean, marker="o", label=label, linestyle="--" if "AdaBN" in label else "-")
            ax.fill_between(ticks, mean - sd, mean + sd, color=line.get_color(), alpha=0.15)
        ax.set_xticks(ticks, [str(s) for s in severities])
        ax.set(title=corruption, ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Accuracy on corrupted MNIST test sets (mean ± sd over seeds; x: severity)")
    fig.tight_layout()
    return fig


def redraw(folder):
    common.write_tables(folder, tables(folder))
    utils.save_figure(plot(read_csv(os.path.join(folder, "shift.csv"), MAKER)), os.path.join(folder, "shift.png"))


def main():
    args = common.parse(common.parser(__doc__, seeds=list(range(1, 21))))
    if not args.redraw:
        runs = [dict(norm=norm, seed=seed) for norm in NORMS for seed in args.seeds]
        pairs, info = common.sweep(runs, args)
        x, y = common.test_images(args)
        models = {(run["norm"], run["seed"]): model.to(x.device) for run, (model, _) in zip(runs, pairs)}
        write_csv(os.path.join(args.images, "shift.csv"), COLUMNS, score_cached(models, x, y, args.results_dir,
                                                                                args.test_limit))
        write_json(os.path.join(args.images, "shift.json"), info)
    redraw(args.images)
    print(f"wrote the shift study's results, tables and figure in {args.images}")


if __name__ == "__main__":
    main()
