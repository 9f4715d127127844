"""When does the norm matter? Images per normalization batch, 2 to 128.

    python studies/batch_size.py        # resumes from runs/; shares its k=128 runs with seeds.py

Main curve (ghost batches): the optimizer batch stays 128 and only BatchNorm's statistics come
from groups of k images (RunConfig.norm_batch = k, model.GhostBatchNorm2d), so normalization
is isolated from optimization. LayerNorm and GroupNorm normalize each image by itself: k does
not enter their computation, so their runs are the same at every k (the recipe's runs, shown
as a flat reference). Second check: real batches of 16 and 32 images for all three norms (the
first two seeds), with AdamW's learning rate scaled by the square root of the batch size
(0.01 * sqrt(b / 128)).

Writes Images/batch_size.csv (norm, norm_batch, batch_size, max_lr, kind, seed, test_accuracy),
Images/batch_size.json (what produced it: command, time, device, commit, recipe) and
Images/batch_size.png.
"""

import dataclasses
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import utils  # noqa: E402
from model import NORMS  # noqa: E402
from studies import common  # noqa: E402

GHOST_SIZES = [2, 4, 8, 16, 32, 64, 128]
REAL_SIZES = [16, 32]
COLUMNS = ["norm", "norm_batch", "batch_size", "max_lr", "kind", "seed", "test_accuracy"]


def scaled_lr(batch_size, base=utils.RunConfig()):
    """The square-root rule for Adam-type optimizers: lr grows with sqrt(batch size)."""
    return round(base.max_lr * math.sqrt(batch_size / base.batch_size), 6)


def plan(seeds, real_seeds=None):
    """[(kind, k, run)]: the runs behind every row of batch_size.csv; the real-batch check uses
    real_seeds (default: the first two seeds, as small batches train slowly on a CPU)."""
    batch = utils.RunConfig().batch_size
    rows = []
    for seed in seeds:
        for norm in NORMS:
            for k in GHOST_SIZES:
                ghost = norm == "B" and k < batch  # k = batch is plain BatchNorm
                rows.append(("ghost", k, dict(norm=norm, seed=seed, **({"norm_batch": k} if ghost else {}))))
            if seed in (real_seeds or seeds[:2]):
                for size in REAL_SIZES:
                    rows.append(("real", size, dict(norm=norm, seed=seed, batch_size=size, max_lr=scaled_lr(size))))
    return rows


def plot(rows, labels):
    """Test error (%) against images per normalization batch (log x), mean and min-max band over
    seeds per norm; the real-batch check as open markers."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for norm, label in labels.items():
        ghost = [r for r in rows if r["norm"] == norm and r["kind"] == "ghost"]
        sizes = sorted({r["norm_batch"] for r in ghost})
        errors = [[100 - r["test_accuracy"] for r in ghost if r["norm_batch"] == k] for k in sizes]
        mean = [np.mean(e) for e in errors]
        line, = ax.plot(sizes, mean, marker="o", label=f"{label} (ghost batches)" if norm == "B" else label)
        ax.fill_between(sizes, [min(e) for e in errors], [max(e) for e in errors], color=line.get_color(), alpha=0.15)
        real = [r for r in rows if r["norm"] == norm and r["kind"] == "real"]
        for size in sorted({r["batch_size"] for r in real}):
            values = [100 - r["test_accuracy"] for r in real if r["batch_size"] == size]
            ax.scatter([size * (1.06 if norm == "L" else 0.94 if norm == "G" else 1)], [np.mean(values)],
                       facecolors="none", edgecolors=line.get_color(), s=60, zorder=3)
    ax.scatter([], [], facecolors="none", edgecolors="gray", s=60, label="real batch of that size, lr ∝ √batch")
    ax.set_xscale("log", base=2)
    ax.set_xticks(GHOST_SIZES, [str(k) for k in GHOST_SIZES])
    ax.set_xlabel("images per normalization batch (log scale)")
    ax.set_ylabel("final test error (%, last epoch)")
    ax.set_title("Test error against normalization batch (mean; band: min-max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def draw(images):
    """batch_size.png from batch_size.csv."""
    labels = {norm: utils.RunConfig(norm=norm).label for norm in NORMS}
    rows = common.read_csv(os.path.join(images, "batch_size.csv"))
    utils.save_figure(plot(rows, labels), os.path.join(images, "batch_size.png"))


def main():
    args = common.parser(__doc__, seeds=[1, 2, 3]).parse_args()
    if args.figures:
        return draw(args.images)
    rows = plan(args.seeds)
    pairs, _, info = common.sweep([run for _, _, run in rows], args)
    table = []
    for (kind, k, run), (_, history) in zip(rows, pairs):
        config = utils.RunConfig.build(**run, **common.settings(args))
        table.append([config.norm, k if kind == "ghost" else config.batch_size, config.batch_size,
                      config.max_lr, kind, config.seed, history["test_accuracy"][-1]])
    common.write_csv(os.path.join(args.images, "batch_size.csv"), COLUMNS, table)
    recipe = utils.RunConfig(norm="B", **common.settings(args))
    info["recipe"] = {k: v for k, v in dataclasses.asdict(recipe).items() if k not in ("norm", "seed")}
    common.write_json(os.path.join(args.images, "batch_size.json"), info)
    draw(args.images)
    print(f"wrote batch_size.csv, batch_size.json and batch_size.png in {args.images}")


if __name__ == "__main__":
    main()
