"""Evidence for the L1 weight: the BatchNorm variant trained with several lambdas, everything else
at the recipe's defaults, on the validation split (the last 10,000 training images held out): a
check of the λ = 1e-5 that an earlier seed-1 sweep chose on the test set. Runs go through
sweeps.sweep (kept in runs/); the differences from λ = 1e-5 are paired by seed.

    python -m benchmarks.l1_sweep                       # lambdas 0, 1e-5, 1e-4, 1e-3; seeds 1-5
    python -m benchmarks.l1_sweep --lambdas 0 1e-4 --seeds 1 2 3
"""

import argparse
import os
import statistics

import sweeps
import utils
from files import ROOT, markdown_table, run_info, short_commit
from studies import common

RECIPE = utils.RunConfig(norm="B").l1_lambda


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, RECIPE, 1e-4, 1e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--results-dir", default=os.path.join(ROOT, "runs"))
    args = parser.parse_args()
    if RECIPE not in args.lambdas or len(args.seeds) < 2:
        parser.error(f"--lambdas must include the recipe's {RECIPE:g}, to pair with, and --seeds at least 2")
    runs = [dict(norm="B", seed=seed, l1_lambda=l1_lambda, validation=True) for l1_lambda in args.lambdas
            for seed in args.seeds]
    pairs = sweeps.sweep(runs, results_dir=args.results_dir, root=os.path.join(ROOT, "data"), progress=False,
                         return_models=True)
    info = run_info(None)
    by_lambda = {l1: {run["seed"]: pair for run, pair in zip(runs, pairs) if run["l1_lambda"] == l1}
                 for l1 in args.lambdas}
    accuracy = {l1: {seed: h["test_accuracy"][-1] for seed, (_, h) in by_seed.items()}
                for l1, by_seed in by_lambda.items()}
    rows = []
    for l1, by_seed in by_lambda.items():
        versus = ["", ""] if l1 == RECIPE else common.compared(accuracy[l1], accuracy[RECIPE])
        rows.append([f"{l1:g}" + (" (the recipe)" if l1 == RECIPE else ""), common.mean_ci(list(accuracy[l1].values())),
                     *versus, f"{statistics.mean(h['test_loss'][-1] for _, h in by_seed.values()):.4f}",
                     f"{statistics.mean(l1 * utils.l1_penalty(m).item() for m, _ in by_seed.values()):.4f}"])
    print(f"BatchNorm variant, the recipe's defaults but λ, validation split, seeds {args.seeds}; "
          f"{info['device']}, torch {info['torch']}, commit {short_commit(info['git_commit'])}")
    print(markdown_table(["λ (sum form)", "final validation accuracy (95% CI)", f"− λ={RECIPE:g}, paired by seed",
                          "verdict", "final validation loss", "λ·Σ|w| at the end"], rows, "lrrlrr"), end="")


if __name__ == "__main__":
    main()
