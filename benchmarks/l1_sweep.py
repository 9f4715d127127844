"""Evidence for the L1 weight: train the BatchNorm variant with several lambdas, all else at
the defaults of utils.run, and print the final-epoch test accuracy and loss of each.

    python benchmarks/l1_sweep.py                       # lambdas 0, 1e-5, 1e-4, 1e-3; 20 epochs
    python benchmarks/l1_sweep.py --lambdas 0 1e-4 --epochs 5
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import utils  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 1e-5, 1e-4, 1e-3])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root", default=os.path.join(ROOT, "data"))
    args = parser.parse_args()

    device = utils.resolve_device(None)
    data = utils.load_tensors(args.root, device)
    print(f"BatchNorm variant, {args.epochs} epochs, seed {args.seed}, device {device}")
    print("| λ (sum form) | final test accuracy | final test loss | λ·Σ|w| at the end |")
    print("|---:|---:|---:|---:|")
    for l1_lambda in args.lambdas:
        model, history = utils.run("B", epochs=args.epochs, seed=args.seed, data=data,
                                   progress=False, l1_lambda=l1_lambda)
        penalty = l1_lambda * utils.l1_penalty(model).item()
        print(f"| {l1_lambda:g} | {history['test_accuracy'][-1]:.2f}% | {history['test_loss'][-1]:.4f} "
              f"| {penalty:.4f} |", flush=True)


if __name__ == "__main__":
    main()
