"""Evidence for the L1 weight: the BatchNorm variant trained with several lambdas, everything
else at the recipe's defaults, on the validation split (the last 10,000 training images held
out): a check of the λ = 1e-5 that an earlier seed-1 sweep chose on the test set. Prints the
mean final validation accuracy and loss of each, and the size of the L1 term at the end. Runs go through utils.sweep (kept in runs/).

    python benchmarks/l1_sweep.py                       # lambdas 0, 1e-5, 1e-4, 1e-3; seeds 1, 2
    python benchmarks/l1_sweep.py --lambdas 0 1e-4 --seeds 1 2 3
"""

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import report  # noqa: E402
import utils  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1e-5, 1e-4, 1e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--results-dir", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--root", default=os.path.join(ROOT, "data"))
    args = parser.parse_args()

    runs = [dict(norm="B", seed=seed, l1_lambda=l1_lambda, validation=True)
            for l1_lambda in args.lambdas for seed in args.seeds]
    pairs = utils.sweep(runs, results_dir=args.results_dir, root=args.root, progress=False, return_models=True)
    info = report.run_info(None)
    print(f"BatchNorm variant, the recipe's defaults but λ, validation split, mean of seeds {args.seeds}; "
          f"{info['device']}, torch {info['torch']}, commit {info['git_commit'][:7]}")
    print("| λ (sum form) | final validation accuracy | final validation loss | λ·Σ|w| at the end |")
    print("|---:|---:|---:|---:|")
    for l1_lambda in args.lambdas:
        chosen = [(model, history) for run, (model, history) in zip(runs, pairs) if run["l1_lambda"] == l1_lambda]
        accuracy = statistics.mean(h["test_accuracy"][-1] for _, h in chosen)
        loss = statistics.mean(h["test_loss"][-1] for _, h in chosen)
        penalty = statistics.mean(l1_lambda * utils.l1_penalty(m).item() for m, _ in chosen)
        print(f"| {l1_lambda:g} | {accuracy:.2f}% | {loss:.4f} | {penalty:.4f} |", flush=True)


if __name__ == "__main__":
    main()
