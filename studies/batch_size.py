"""When does the norm matter? Images per normalization batch, 2 to 128.

    python -m studies.batch_size        # resumes from runs/; shares its k=128 runs with studies.seeds

Main curve (ghost batches): the optimizer batch stays 128 and only BatchNorm's statistics come
from groups of k images (RunConfig.norm_batch = k, ghost.GhostBatchNorm2d), so normalization is
isolated from optimization; seeds 1-10. LayerNorm and GroupNorm normalize each image by itself:
k does not enter their computation, so their runs (and k = 128) are the seeds study's. Second
check: real batches of 16 and 32 images for all three norms (seeds 1-3), with AdamW's learning
rate scaled by the square root of the batch size (0.01 * sqrt(b / 128)).

Writes, in Images/: batch_size.csv (norm, norm_batch, batch_size, max_lr, kind, seed, test_accuracy),
batch_size.json (what produced it), batch_size.png and the tables tables/batch_size_brief.md, batch_size.md
and batch_size_real.md.
"""

import math
import os

import numpy as np

import utils
from files import markdown_table, read_csv, read_json, write_csv, write_json
from model import NORMS
from studies import common, stats

TABLE_NAMES = ("batch_size_brief.md", "batch_size.md", "batch_size_real.md")  # in Images/tables/
RESULTS = "batch_size.csv"  # in Images/: without it the study has not run
MAKER = "python -m studies.batch_size"
GHOST_SIZES = [2, 4, 8, 16, 32, 64, 128]
REAL_SIZES = [16, 32]
COLUMNS = ["norm", "norm_batch", "batch_size", "max_lr", "kind", "seed", "test_accuracy"]


def scaled_lr(batch_size, base=utils.RunConfig()):
    """The square-root rule for Adam-type optimizers: lr grows with sqrt(batch size)."""
    return round(base.max_lr * math.sqrt(batch_size / base.batch_size), 6)


def plan(seeds, real_seeds):
    """[(kind, k, run)]: the runs behind every row of batch_size.csv."""
    batch = utils.RunConfig().batch_size
    rows = [("ghost", k, dict(norm="B", seed=seed, **({"norm_batch": k} if k < batch else {})))
            for seed in seeds for k in GHOST_SIZES]  # k = the batch is plain BatchNorm
    rows += [("ghost", batch, dict(norm=norm, seed=seed)) for seed in seeds for norm in "LG"]
    rows += [("real", size, dict(norm=norm, seed=seed, batch_size=size, max_lr=scaled_lr(size)))
             for seed in real_seeds for size in REAL_SIZES for norm in NORMS]
    return rows


def scores(rows, norm, kind, size):
    """{seed: final test accuracy} of the runs of one norm and kind at one size (k or batch)."""
    key = "norm_batch" if kind == "ghost" else "batch_size"
    return {r["seed"]: r["test_accuracy"] for r in rows if r["norm"] == norm and r["kind"] == kind and r[key] == size}


def tables(folder):
    """batch_size.md: BatchNorm at each ghost size k against its own k = 128 and against GroupNorm,
    paired by seed, each with the verdict its CI supports; batch_size_brief.md: the verdicts alone;
    batch_size_real.md: the real batches."""
    rows = read_csv(os.path.join(folder, "batch_size.csv"), MAKER)
    sizes = sorted({r["norm_batch"] for r in rows if r["kind"] == "ghost"})
    largest = scores(rows, "B", "ghost", sizes[-1])
    layer, group = scores(rows, "L", "ghost", sizes[-1]), scores(rows, "G", "ghost", sizes[-1])
    ghost, verdicts, ghost_widths = [], {"own": {}, "G": {}}, []
    for k in sizes:
        batch = scores(rows, "B", "ghost", k)
        own = ["(reference)", ""] if k == sizes[-1] else common.compared(batch, largest)
        verdicts["own"][k] = own[1] or own[0]  # the brief table shows "(reference)" too
        against = common.paired_by_seed(batch, group)
        verdicts["G"][k] = stats.verdict(against["ci"])
        ghost_widths.append(common.half_width(against))
        ghost.append([k, common.mean_ci(list(batch.values())), *own, *common.cells(against)])
    main = (markdown_table(["images per norm batch k", "BatchNorm, ghost batches (95% CI)",
                            f"BatchNorm − its k={sizes[-1]} (95% CI)", "verdict", "BatchNorm − GroupNorm (95% CI)",
                            "verdict"], ghost, "lrrlrl")
            + f"\nFinal test accuracy (%), seeds {common.seed_list(largest)} at every k (at k = {sizes[-1]} the seeds "
            "study's own runs of those seeds; its headline averages all its seeds), differences in points paired by "
            f"seed. LayerNorm {common.mean_ci(list(layer.values()))} and GroupNorm "
            f"{common.mean_ci(list(group.values()))} normalize each image by itself, so k does not enter them. "
            + common.provenance(read_json(os.path.join(folder, "batch_size.json"), MAKER)))
    real_sizes = sorted({r["batch_size"] for r in rows if r["kind"] == "real"})
    real_seeds = sorted({r["seed"] for r in rows if r["kind"] == "real"})
    real, widths = [], []
    for size, kind in [(s, "real") for s in real_sizes] + [(sizes[-1], "ghost")]:  # the recipe's batch last
        by_norm = {n: {s: v for s, v in scores(rows, n, kind, size).items() if s in real_seeds} for n in NORMS}
        key = "batch_size" if kind == "real" else "norm_batch"
        lr = next(r["max_lr"] for r in rows if r["kind"] == kind and r[key] == size)
        against = common.paired_by_seed(by_norm["B"], by_norm["G"])
        real.append([f"{size}" + (" (the recipe)" if kind == "ghost" else ""), f"{lr:g}",
                     *(common.mean_ci(list(by_norm[n].values())) for n in NORMS), *common.cells(against)])
        widths.append(common.half_width(against))
    real_table = (markdown_table(["real batch", "peak lr", *(f"{NORMS[n]} (95% CI)" for n in NORMS),
                                  "BatchNorm − GroupNorm (95% CI)", "verdict"], real, "lrrrrrl")
                  + f"\nFinal test accuracy (%), seeds {common.seed_list(real_seeds)}, the learning rate scaled by "
                  f"√(batch / 128). A BatchNorm − GroupNorm CI here is ±{np.mean(widths):.2f} points on average, "
                  f"against ±{np.mean(ghost_widths):.2f} for the ghost batches' {len(largest)} seeds: \"within noise\" "
                  "here rules out only larger differences.\n")
    brief = common.verdict_table("BatchNorm at k images, against", sizes,
                                 {f"its own k = {sizes[-1]}": verdicts["own"], NORMS["G"]: verdicts["G"]}, "k")
    brief += (f"\nVerdicts of [the full table](studies/README.md#batch-size), paired by seed over {len(largest)} seeds "
              "(95% CI); last column: the smallest k from which none is \"lower\".\n")
    return {"batch_size_brief.md": brief, "batch_size.md": main, "batch_size_real.md": real_table}


def plot(rows, labels):
    """Test error (%) against images per normalization batch (log x): BatchNorm's ghost batches
    with 95% CIs, LayerNorm and GroupNorm as bands (mean and CI: k does not enter them), and the
    real batches' means as open squares in each norm's colour (their few seeds' CIs, in the table, would
    dwarf the curve)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    sizes = sorted({r["norm_batch"] for r in rows if r["kind"] == "ghost"})
    for color, (norm, label) in zip(["C0", "C1", "C2"], labels.items()):  # the notebook's order and colours
        described = {k: stats.describe([100 - v for v in scores(rows, norm, "ghost", k).values()])
                     for k in sizes if scores(rows, norm, "ghost", k)}
        if norm == "B":
            mean = np.array([d["mean"] for d in described.values()])
            low, high = np.array([d["ci"] for d in described.values()]).T
            ax.errorbar(list(described), mean, yerr=[mean - low, high - mean], marker="o", capsize=3,
                        color=color, label=f"{label} (ghost batches)")
        else:
            d = described[sizes[-1]]
            ax.axhline(d["mean"], color=color, linestyle="--", label=f"{label} (any k; band: 95% CI)")
            ax.axhspan(d["ci"][0], d["ci"][1], color=color, alpha=0.12)
        for size in sorted({r["batch_size"] for r in rows if r["kind"] == "real"}):  # right of k, one offset a norm
            values = [100 - v for v in scores(rows, norm, "real", size).values()]
            ax.plot([size * {"B": 1.08, "L": 1.16, "G": 1.24}[norm]], [np.mean(values)], marker="s", markersize=6,
                    color=color, markerfacecolor="none", linestyle="none", gid=f"real {norm}")
    seeds = len({r["seed"] for r in rows if r["kind"] == "real"})
    ax.plot([], [], marker="s", markerfacecolor="none", color="gray", linestyle="none",
            label=f"real batch of k images, lr ∝ √batch: mean of {seeds} seeds (colour: norm)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(GHOST_SIZES, [str(k) for k in GHOST_SIZES])
    ax.set(xlabel="k: images per normalization batch (log scale)", ylabel="final test error (%, last epoch)",
           title="Test error against the normalization batch (mean and 95% CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def redraw(folder):
    common.write_tables(folder, tables(folder))
    labels = {norm: utils.RunConfig(norm=norm).label for norm in NORMS}
    figure = plot(read_csv(os.path.join(folder, "batch_size.csv"), MAKER), labels)
    utils.save_figure(figure, os.path.join(folder, "batch_size.png"))


def main():
    parser = common.parser(__doc__, seeds=list(range(1, 11)))
    parser.add_argument("--real-seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds of the real batches")
    args = common.parse(parser)
    if not args.redraw:
        rows = plan(args.seeds, args.real_seeds)
        pairs, info = common.sweep([run for _, _, run in rows], args)
        table = []
        for (kind, k, run), (_, history) in zip(rows, pairs):
            config = utils.RunConfig.build(**run, **common.settings(args))
            table.append([config.norm, k if kind == "ghost" else config.batch_size, config.batch_size,
                          config.max_lr, kind, config.seed, history["test_accuracy"][-1]])
        write_csv(os.path.join(args.images, "batch_size.csv"), COLUMNS, table)
        write_json(os.path.join(args.images, "batch_size.json"), info)
    redraw(args.images)
    print(f"wrote the batch-size study's results, tables and figure in {args.images}")


if __name__ == "__main__":
    main()
