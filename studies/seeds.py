"""The headline: every norm trained with the same recipe over many seeds, final epoch.

    python -m studies.seeds              # 3 norms x seeds 1-20, 20 epochs; resumes from runs/

Writes, in Images/: seeds.csv (one row per run), history.csv (every epoch of every run), summary.json
(per variant, every seed's final accuracy in seed order, and what produced them), test_loss.png and
test_accuracy.png (Graph 1 and 2: the mean over seeds with a ±1 sd band), seeds.png (each seed's
final accuracy) and the tables tables/headline.md and comparisons.md.
"""

import os

import numpy as np

import utils
from files import markdown_table, read_csv, read_json, write_csv
from model import NORMS, count_parameters
from studies import common, stats

TABLE_NAMES = ("headline.md", "comparisons.md")  # in Images/tables/
RESULTS = "summary.json"  # in Images/: without it the study has not run
MAKER = "python -m studies.seeds"
COLUMNS = ["norm", "seed", "final_test_accuracy", "final_test_loss", "final_train_accuracy", "params",
           "device", "seconds"]
TARGET = 99.5  # the assignment's target for the mean final test accuracy, percent


def tables(folder):
    """headline.md (per variant: mean, CI, sd, range, and whether the mean meets the target) and
    comparisons.md (the norms paired by seed, Holm-adjusted), from folder/summary.json."""
    summary = read_json(os.path.join(folder, "summary.json"), MAKER)
    norms = [n for n in NORMS if n in summary]
    scores = {n: dict(zip(summary[n]["seeds"], summary[n]["final_test_accuracy_per_seed"])) for n in norms}
    described = {n: stats.describe(list(scores[n].values())) for n in norms}
    rows = [[summary[n]["name"], f"{summary[n]['params']:,}", f"**{d['mean']:.2f}%**",
             f"{d['ci'][0]:.2f} to {d['ci'][1]:.2f}", f"{d['sd']:.2f}", f"{d['min']:.2f} to {d['max']:.2f}",
             f"{summary[n]['final_test_loss']:.4f}", "yes" if d["mean"] >= TARGET else "no"]
            for n, d in described.items()]
    seeds = "/".join(map(str, sorted({d["n"] for d in described.values()})))
    headline = (markdown_table(["variant", "params", "mean final test accuracy", "95% CI of the mean", "sd",
                                "min to max", "mean final test loss", f"mean ≥ {TARGET:.2f}%?"], rows)
                + f"\n{seeds} seeds per variant, {summary[norms[0]]['epochs']} epochs, the accuracy of the final "
                f"epoch (never the best one). " + common.provenance(summary["run"]))
    pairs = [(a, b) for i, a in enumerate(norms) for b in norms[i + 1:]]
    results = [common.paired_by_seed(scores[a], scores[b]) for a, b in pairs]
    adjusted = stats.holm([r["p"] for r in results])
    rows = [[f"{NORMS[a]} − {NORMS[b]}", common.signed_ci(r), f"{r['p']:.3f}", f"{p:.3f}",
             "within noise" if p >= 0.05 else f"{NORMS[a] if r['mean'] > 0 else NORMS[b]} higher"]
            for (a, b), r, p in zip(pairs, results, adjusted)]
    comparisons = markdown_table(["difference (same seeds)", "mean, points (95% CI)", "p (paired t-test)",
                                  f"p (Holm, {len(pairs)} tests)", "verdict (Holm p < 0.05)"], rows, "lrrrl")
    return {"headline.md": headline, "comparisons.md": comparisons}


def plot_seeds(rows, labels):
    """Each seed's final test accuracy per variant (dots), with the mean and its 95% CI."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rng = np.random.default_rng(0)  # horizontal jitter only
    for x, norm in enumerate(labels):
        values = [r["final_test_accuracy"] for r in rows if r["norm"] == norm]
        ax.scatter(x + rng.uniform(-0.12, 0.12, len(values)), values, s=18, alpha=0.7)
        d = stats.describe(values)
        ax.errorbar(x + 0.25, d["mean"], yerr=[[d["mean"] - d["ci"][0]], [d["ci"][1] - d["mean"]]],
                    fmt="o", color="black", capsize=4)
    ax.set_xticks(range(len(labels)), [f"{label}\n({sum(r['norm'] == n for r in rows)} seeds)"
                                       for n, label in labels.items()])
    ax.axhline(TARGET, color="gray", linestyle="--", linewidth=1, label=f"{TARGET}% target")
    ax.legend(loc="lower right", fontsize=8)
    ax.set(ylabel="final test accuracy (%, last epoch)",
           title="Final test accuracy of every seed; black: mean with 95% CI")
    ax.grid(alpha=0.3, axis="y")
    return fig


def redraw(folder):
    """The tables and figures, from the saved results in `folder`."""
    common.write_tables(folder, tables(folder))
    summary = read_json(os.path.join(folder, "summary.json"), MAKER)
    labels = {norm: summary[norm]["name"] for norm in NORMS if norm in summary}
    histories = utils.load_histories(os.path.join(folder, "history.csv"), MAKER)
    utils.save_figure(utils.plot_test_loss(histories, labels), os.path.join(folder, "test_loss.png"))
    utils.save_figure(utils.plot_test_accuracy(histories, labels), os.path.join(folder, "test_accuracy.png"))
    rows = read_csv(os.path.join(folder, "seeds.csv"), MAKER)
    utils.save_figure(plot_seeds(rows, labels), os.path.join(folder, "seeds.png"))


def main():
    args = common.parse(common.parser(__doc__, seeds=list(range(1, 21))))
    if not args.redraw:
        runs = [dict(norm=norm, seed=seed) for norm in NORMS for seed in args.seeds]
        pairs, info = common.sweep(runs, args)
        configs = {norm: utils.RunConfig(norm=norm, seed=args.seeds[0], **common.settings(args)) for norm in NORMS}
        histories, params, rows = {norm: {} for norm in NORMS}, {}, []
        for run, (model, history) in zip(runs, pairs):
            histories[run["norm"]][run["seed"]] = history
            params[run["norm"]] = count_parameters(model)
            rows.append([run["norm"], run["seed"], history["test_accuracy"][-1], f"{history['test_loss'][-1]:.6f}",
                         f"{history['train_accuracy'][-1]:.4f}", params[run["norm"]], info["device"],
                         f"{sum(history['seconds']):.1f}"])
        utils.save_results(histories, configs, params, args.images, info)
        write_csv(os.path.join(args.images, "seeds.csv"), COLUMNS, rows)
    redraw(args.images)
    print(f"wrote the seeds study's results, tables and figures in {args.images}")


if __name__ == "__main__":
    main()
