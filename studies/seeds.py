"""The headline: every norm trained with the same recipe over many seeds, final epoch.

    python studies/seeds.py              # 3 norms x seeds 1-20, 20 epochs; resumes from runs/
    python studies/seeds.py --candidate "SiLU, last 3 epochs unaugmented"   # a search finalist

--candidate trains a recipe search candidate (studies/search.py) that became a finalist on the
validation split instead of the recipe, on all 60,000 images, and writes the same files to
studies/finalists/<its name> (not to Images/); report.py compares it there with the seeds study
of the recipe it would replace (studies/previous_recipe/ once a finalist was adopted).

Writes Images/seeds.csv (one row per run), Images/history.csv (every epoch of every run),
Images/summary.json (per variant, with every seed's final accuracy in seed order, and what
produced them), Images/test_loss.png and Images/test_accuracy.png (Graph 1 and 2: the mean
over seeds with a ±1 sd band) and Images/seeds.png (each seed's final accuracy per variant).
The README's tables and paired comparisons are computed from these by report.py.
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import utils  # noqa: E402
from model import NORMS, count_parameters  # noqa: E402
from studies import common, stats  # noqa: E402

COLUMNS = ["norm", "seed", "final_test_accuracy", "final_test_loss", "final_train_accuracy", "params",
           "device", "seconds"]


def plot_seeds(rows, labels):
    """Each seed's final test accuracy per variant (dots), with the mean and its 95% CI."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    rng = np.random.default_rng(0)  # horizontal jitter only
    for x, norm in enumerate(labels):
        values = [r["final_test_accuracy"] for r in rows if r["norm"] == norm]
        ax.scatter(x + rng.uniform(-0.12, 0.12, len(values)), values, s=18, alpha=0.7)
        summary = stats.describe(values)
        low, high = summary["ci"]
        ax.errorbar(x + 0.25, summary["mean"], yerr=[[summary["mean"] - low], [high - summary["mean"]]],
                    fmt="o", color="black", capsize=4)
    ax.set_xticks(range(len(labels)), [f"{label}\n({sum(r['norm'] == n for r in rows)} seeds)"
                                       for n, label in labels.items()])
    ax.axhline(99.5, color="gray", linestyle="--", linewidth=1, label="99.5% target")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_ylabel("final test accuracy (%, last epoch)")
    ax.set_title("Final test accuracy of every seed; black: mean with 95% CI")
    ax.grid(alpha=0.3, axis="y")
    return fig


def draw(images):
    """Graph 1, Graph 2 and the per-seed figure, from the saved tables in `images`."""
    summary = common.read_json(os.path.join(images, "summary.json"))
    labels = {norm: summary[norm]["name"] for norm in NORMS}
    histories = utils.load_histories(os.path.join(images, "history.csv"))
    utils.save_figure(utils.plot_test_loss(histories, labels), os.path.join(images, "test_loss.png"))
    utils.save_figure(utils.plot_test_accuracy(histories, labels), os.path.join(images, "test_accuracy.png"))
    table = common.read_csv(os.path.join(images, "seeds.csv"))
    utils.save_figure(plot_seeds(table, labels), os.path.join(images, "seeds.png"))


def finalist_dir(name):
    """Where the test-set study of the search finalist `name` is written."""
    from studies import search

    return os.path.join(common.ROOT, "studies", "finalists", search.finalist_folder(name))


def main():
    from studies import search

    parser = common.parser(__doc__, seeds=list(range(1, 21)))
    parser.add_argument("--candidate", metavar="NAME",
                        help="train this search finalist (search.FINALISTS) instead of the recipe; its files go "
                             "to studies/finalists/<name> unless --images says otherwise")
    args = parser.parse_args()
    overrides = {}
    if args.candidate and args.candidate not in search.FINALISTS:
        parser.error(f"--candidate {args.candidate!r} is not a finalist: only candidates that met a search round's "
                     f"rule on the validation split are scored on the test set (search.FINALISTS: "
                     f"{search.FINALISTS or 'none yet'})")
    if args.candidate:
        overrides = search.CANDIDATES[args.candidate]
        if args.images == common.IMAGES:
            args.images = finalist_dir(args.candidate)
        headline = os.path.realpath(common.IMAGES)
        if os.path.commonpath([os.path.realpath(args.images), headline]) == headline:
            parser.error(f"--images {args.images}: a finalist's study is not written into Images/, which holds "
                         "the recipe's headline study; leave --images out (studies/finalists/<name>) or name "
                         "another folder")
        os.makedirs(args.images, exist_ok=True)
    if args.figures:
        return draw(args.images)
    runs = [dict(norm=norm, seed=seed, **overrides) for norm in NORMS for seed in args.seeds]
    pairs, seconds, info = common.sweep(runs, args)
    if args.candidate:
        info["candidate"] = args.candidate

    configs = {norm: utils.RunConfig(norm=norm, seed=args.seeds[0], **{**overrides, **common.settings(args)})
               for norm in NORMS}
    histories, params, rows = {norm: {} for norm in NORMS}, {}, []
    for run, (model, history) in zip(runs, pairs):
        histories[run["norm"]][run["seed"]] = history
        params[run["norm"]] = count_parameters(model)
        rows.append([run["norm"], run["seed"], history["test_accuracy"][-1], f"{history['test_loss'][-1]:.6f}",
                     f"{history['train_accuracy'][-1]:.4f}", params[run["norm"]], info["device"],
                     f"{sum(history['seconds']):.1f}"])
    info["recipe"] = {k: v for k, v in dataclasses.asdict(configs["B"]).items() if k not in ("norm", "seed")}
    utils.save_results(histories, configs, params, args.images, info)
    common.write_csv(os.path.join(args.images, "seeds.csv"), COLUMNS, rows)
    draw(args.images)
    print(f"wrote seeds.csv, history.csv, summary.json, test_loss.png, test_accuracy.png, seeds.png in {args.images}")


if __name__ == "__main__":
    main()
