"""Choosing the recipe on a validation split: candidates x norms x seeds, never the test set.

    python studies/search.py            # every round below; finished runs load from runs/
    python studies/search.py --rounds 1 # only the first round

Every run trains on the first 50,000 training images and is scored on the last 10,000
(RunConfig(validation=True)); the test set is not loaded. Each candidate is a set of RunConfig
fields applied to all three norms (λ stays BatchNorm's only). Writes studies/search.csv (one
row per run, final epoch) and studies/search.json (the rounds, device, time, commit), which
studies/README.md tabulates.
"""

import argparse
import csv
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import report  # noqa: E402
import utils  # noqa: E402
from data import atomic_write  # noqa: E402
from model import count_parameters  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = "c14 c14 p v14 v14 c14"  # the 7,850-parameter network the project started from

CANDIDATES = {
    "base": dict(layout=BASE),
    "label smoothing 0.1": dict(layout=BASE, label_smoothing=0.1),
    "rotation 10°": dict(layout=BASE, rotation=10.0),
    "max_lr 0.02": dict(layout=BASE, max_lr=0.02),
    "wide tail": dict(layout="c10 c14 p v18 v18 d18"),
    "separable tail 24": dict(layout="c14 c14 p v24 dv24 d24"),
    "separable tail 32": dict(layout="c14 c14 p v22 dv32 d32"),
}
# Screening with two seeds per norm, then more seeds for the candidates worth confirming.
ROUNDS = [
    dict(candidates=list(CANDIDATES), seeds=[1, 2]),
]
COLUMNS = ["candidate", "norm", "seed", "layout", "params", "overrides", "val_accuracy", "val_loss",
           "train_accuracy", "seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, nargs="+", help="which rounds (1-based; default all)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--results-dir", default=os.path.join(os.path.dirname(HERE), "runs"))
    args = parser.parse_args()

    runs, names = [], []
    for number, round_ in enumerate(ROUNDS, start=1):
        if args.rounds and number not in args.rounds:
            continue
        for name in round_["candidates"]:
            for norm in "BLG":
                for seed in round_["seeds"]:
                    runs.append(dict(norm=norm, seed=seed, validation=True, **CANDIDATES[name]))
                    names.append(name)
    start = time.perf_counter()
    pairs = utils.sweep(runs, workers=args.workers, results_dir=args.results_dir, device=args.device,
                        return_models=True)
    seconds = time.perf_counter() - start

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for name, run, (model, history) in sorted(zip(names, runs, pairs), key=lambda r: (r[0], r[1]["norm"], r[1]["seed"])):
        config = utils.RunConfig.build(**run)
        overrides = " ".join(f"{k}={v}" for k, v in CANDIDATES[name].items() if k != "layout") or "-"
        writer.writerow([name, config.norm, config.seed, config.layout, count_parameters(model),
                         overrides, history["test_accuracy"][-1], f"{history['test_loss'][-1]:.5f}",
                         f"{history['train_accuracy'][-1]:.3f}", f"{sum(history['seconds']):.1f}"])
    atomic_write(os.path.join(HERE, "search.csv"), out.getvalue())
    info = report.run_info(args.device, rounds=ROUNDS, sweep_seconds=round(seconds, 1), workers=args.workers)
    atomic_write(os.path.join(HERE, "search.json"), json.dumps(info, indent=1) + "\n")
    print(f"{len(runs)} runs in {seconds:.0f} s; wrote studies/search.csv")


if __name__ == "__main__":
    main()
