"""How many unlabeled target images does AdaBN need? BatchNorm's statistics from n images of a shifted set.

    python -m studies.adabn        # the seeds study's BatchNorm models (from runs/); studies.shift first

AdaBN (Li et al. 2016) recomputes BatchNorm's running statistics on target images; the shift study
uses all 10,000 of each corrupted test set. Here each BatchNorm model is adapted on n images of each
of the shift study's sets (DRAWS per n, fixed draws, the same for every set and model) and scored on
the whole set; n = 0 is the model unadapted. Each model's scores are kept beside its run in runs/.

Writes, in Images/: adabn.csv (seed, corruption, severity, n, draw, test_accuracy), adabn.json, adabn.png
and the tables tables/adabn_brief.md, adabn.md and adabn_full.md, which pair each seed with its LayerNorm
and GroupNorm models in shift.csv.
"""

import os
import time

import numpy as np
import torch

import data as mnist
import utils
from files import markdown_table, read_csv, read_json, write_csv, write_json
from model import NORMS
from studies import common, shift, stats

TABLE_NAMES = ("adabn_brief.md", "adabn.md", "adabn_full.md")  # in Images/tables/
RESULTS = "adabn.csv"  # in Images/: without it the study has not run
MAKER = "python -m studies.adabn"
ADABN_VERSION = 1  # bump when draw(), adapt() or the scoring change what a model scores
DRAWS = {1: 5, 4: 5, 16: 5, 64: 3, 256: 2, 1000: 2}  # n target images -> draws of them (several for small n)
COLUMNS = ["seed", "corruption", "severity", "n", "draw", "test_accuracy"]


def plan(total):
    """[(n, draws)]: the model unadapted (n = 0), each n of DRAWS below `total`, and all images once."""
    return [(0, 1), *((n, k) for n, k in DRAWS.items() if n < total), (total, 1)]


def draw(n, number, total):
    """The indices of draw `number` of n of `total` images: the first n of a permutation seeded by
    `number` (all images, in order, for n = total)."""
    generator = torch.Generator().manual_seed(number)
    return torch.arange(total) if n >= total else torch.randperm(total, generator=generator)[:n]


def adapt(model, images, n, number):
    """`model` with BatchNorm's statistics recomputed on draw `number` of n of `images` (n = 0: itself)."""
    return shift.adapt_batchnorm(model, images[draw(n, number, len(images)).to(images.device)]) if n else model


def score(seed, model, x, y):
    """[(seed, corruption, severity, n, draw, accuracy)] of one model on every corruption of x."""
    rows = []
    for corruption, severities in shift.CORRUPTIONS.items():
        for severity in severities:
            images = mnist.normalize(shift.corrupt(x, corruption, severity))
            for n, draws in plan(len(x)):
                for number in range(draws):
                    accuracy = utils.evaluate(adapt(model, images, n, number), images, y)[1]
                    rows.append((seed, corruption, severity, n, number, accuracy))
    return rows


def score_cached(models, x, y, results_dir, test_limit=None):
    """score() of every {seed: model}, each kept in results_dir (keyed by its weights and both scoring
    versions) as soon as it is done, so that a second call only reads them; rows in the models' order."""
    paths = {seed: common.score_path(results_dir, "B", seed, model, "adabn", shift.SCORING_VERSION, ADABN_VERSION,
                                     test_limit) for seed, model in models.items()}
    for seed, model in models.items():
        if not os.path.exists(paths[seed]):
            start = time.perf_counter()
            write_json(paths[seed], score(seed, model, x, y))
            print(f"AdaBN: seed {seed} scored in {time.perf_counter() - start:.0f} s")
    return [tuple(row) for seed in models for row in read_json(paths[seed])]


def by_seed(rows, n, keep):
    """{seed: mean over the sets that keep(row) accepts of the mean over draws, with n images}."""
    sets = {}
    for r in rows:
        if r["n"] == n and keep(r):
            sets.setdefault(r["seed"], {}).setdefault((r["corruption"], r["severity"]), []).append(r["test_accuracy"])
    return {seed: float(np.mean([np.mean(v) for v in by_set.values()])) for seed, by_set in sets.items()}


def mean(values_by_seed):
    return float(np.mean(list(values_by_seed.values())))


def tables(folder):
    """adabn.md: per n, AdaBN over all corrupted sets and its difference from LayerNorm and GroupNorm
    (paired by seed, with the verdict its CI supports); adabn_brief.md: those verdicts in a row per
    norm; adabn_full.md: per corruption and n."""
    rows = read_csv(os.path.join(folder, "adabn.csv"), MAKER)
    others = read_csv(os.path.join(folder, "shift.csv"), shift.MAKER)
    sizes = sorted({r["n"] for r in rows})
    names = {n: "0 (not adapted)" if n == 0 else f"{n:,} (all)" if n == sizes[-1] else f"{n:,}" for n in sizes}
    reference = {m: shift.mean_by_seed(others, m, shift.corrupted) for m in "LG"}
    lines, verdicts = [], {m: {} for m in "LG"}
    for n in sizes:
        adapted = by_seed(rows, n, shift.corrupted)
        cells = {m: common.compared(adapted, reference[m]) for m in "LG"}  # [a − b with its CI, verdict]
        for m in "LG":
            verdicts[m][n] = cells[m][1]
        lines.append([names[n], len({r["draw"] for r in rows if r["n"] == n}), common.mean_ci(list(adapted.values())),
                      *cells["L"], *cells["G"]])
    info, seeds = os.path.join(folder, "adabn.json"), len({r["seed"] for r in rows})
    made = common.provenance(read_json(info, MAKER)) if os.path.exists(info) else "\n"
    sets = len({(r["corruption"], r["severity"]) for r in rows if shift.corrupted(r)})
    main = markdown_table(["unlabeled target images n", "draws", "BatchNorm + AdaBN (95% CI)",
                           *(h for m in "LG" for h in (f"− {NORMS[m]} (95% CI)", "verdict"))], lines, "rrrrlrl")
    brief = common.verdict_table("AdaBN from n unlabeled images, against", sizes,
                                 {f"{NORMS[m]}, all corrupted sets": verdicts[m] for m in "LG"}, "n")
    full = [["none (clean)" if name == "none" else f"**{name}**" if keep is shift.corrupted else name,
             *(f"{mean(by_seed(rows, n, keep)):.2f}" for n in sizes),
             *(f"{mean(shift.mean_by_seed(others, m, keep)):.2f}" for m in "LG")] for name, keep in shift.groups(True)]
    header = ["corruption (mean over severities)", *(f"n = {names[n]}" for n in sizes), NORMS["L"], NORMS["G"]]
    return {"adabn_brief.md": brief + f"\nPaired by seed over {seeds} seeds (95% CI); n = 0 is BatchNorm not adapted, "
            f"n = {sizes[-1]:,} the whole set; the last column: the smallest n from which no verdict is \"lower\" "
            "(— if AdaBN is still lower with every image).\n",
            "adabn.md": main + f"\nAccuracy in points over the {sets} corrupted sets of the shift study, each scored "
            f"whole; per seed the mean over draws, then over sets; 95% CIs over {seeds} seeds, differences paired by "
            "seed with Images/shift.csv. " + made,
            "adabn_full.md": markdown_table(header, full) + f"\nAccuracy in points, the mean over {seeds} seeds of "
            "each seed's mean over draws, then over severities; LayerNorm and GroupNorm from Images/shift.csv. " + made}


def plot(rows, others):
    """AdaBN's accuracy against n, a line (mean and 95% CI over seeds) per corruption and for all corrupted
    sets; LayerNorm, GroupNorm and the unadapted BatchNorm over all corrupted sets as horizontal lines."""
    import matplotlib.pyplot as plt
    sizes = sorted({r["n"] for r in rows if r["n"] > 0})
    fig, ax = plt.subplots(figsize=(8, 5))
    palette = [c for i, c in enumerate(plt.cm.tab10.colors) if i != 7]  # gray is the reference lines'
    for i, (name, keep) in enumerate(shift.groups(False)):
        color = "black" if keep is shift.corrupted else palette[i % len(palette)]
        described = [stats.describe(list(by_seed(rows, n, keep).values())) for n in sizes]
        ax.plot(sizes, [d["mean"] for d in described], marker="o", markersize=3, label=name, color=color,
                linewidth=2.5 if keep is shift.corrupted else 1.2)
        ax.fill_between(sizes, *np.array([d["ci"] for d in described]).T, color=color, alpha=0.12)
    for values, name, style in ((shift.mean_by_seed(others, "L", shift.corrupted), NORMS["L"], "--"),
                                (shift.mean_by_seed(others, "G", shift.corrupted), NORMS["G"], "-."),
                                (by_seed(rows, 0, shift.corrupted), "BatchNorm, not adapted", ":")):
        ax.axhline(mean(values), color="gray", linestyle=style, label=f"{name}, all corrupted sets")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.set(xlabel="unlabeled target images n (log scale)", ylabel="test accuracy on the whole set (%)",
           title=f"BatchNorm + AdaBN from n images (mean and 95% CI over {len({r['seed'] for r in rows})} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def redraw(folder):
    common.write_tables(folder, tables(folder))
    rows = read_csv(os.path.join(folder, "adabn.csv"), MAKER)
    others = read_csv(os.path.join(folder, "shift.csv"), shift.MAKER)
    utils.save_figure(plot(rows, others), os.path.join(folder, "adabn.png"))


def main():
    args = common.parse(common.parser(__doc__, seeds=list(range(1, 21))))
    if not os.path.exists(os.path.join(args.images, "shift.csv")):
        raise SystemExit(f"{args.images}/shift.csv is missing: run `{shift.MAKER}` first "
                         "(LayerNorm and GroupNorm's scores)")
    if not args.redraw:
        runs = [dict(norm="B", seed=seed) for seed in args.seeds]
        pairs, info = common.sweep(runs, args)
        x, y = common.test_images(args)
        models = {run["seed"]: model.to(x.device) for run, (model, _) in zip(runs, pairs)}
        start = time.perf_counter()
        write_csv(os.path.join(args.images, "adabn.csv"), COLUMNS, score_cached(models, x, y, args.results_dir,
                                                                                args.test_limit))
        info["parameters"]["scoring_seconds"] = round(time.perf_counter() - start, 1)
        write_json(os.path.join(args.images, "adabn.json"), info)
    redraw(args.images)
    print(f"wrote the AdaBN study's results, tables and figure in {args.images}")


if __name__ == "__main__":
    main()
