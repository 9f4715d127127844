"""What the study scripts share: their command line, the sweep they train through, and files."""

import argparse
import csv
import io
import json
import shlex
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import report  # noqa: E402
import utils  # noqa: E402
from data import atomic_write  # noqa: E402
from report import read_json  # noqa: E402, F401  (the studies read their saved JSON with it)

IMAGES = os.path.join(ROOT, "Images")


def parser(doc, seeds):
    """The options every study takes; `seeds` is its default list of seeds (None: no --seeds)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if seeds:
        p.add_argument("--seeds", type=int, nargs="+", default=seeds, help=f"seeds per variant (default {seeds})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: see utils.sweep)")
    p.add_argument("--results-dir", default=os.path.join(ROOT, "runs"),
                   help="where finished runs are kept, so that a second call loads them (default runs/)")
    p.add_argument("--images", default=IMAGES, help="where the tables and figures are written (default Images/)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the recipe's)")
    p.add_argument("--train-limit", type=int, help="train on the first N images (a quick trial; default all)")
    p.add_argument("--test-limit", type=int, help="test on the first N images (a quick trial; default all)")
    p.add_argument("--figures", action="store_true",
                   help="only redraw the figures from the saved tables; nothing is trained or rewritten")
    return p


def settings(args):
    """The RunConfig fields the command line sets for every run of a study."""
    names = {"epochs": args.epochs, "train_limit": args.train_limit, "test_limit": args.test_limit}
    return {name: value for name, value in names.items() if value is not None}


def sweep(runs, args):
    """Train (or load) `runs` through utils.sweep; returns ((model, history) pairs, seconds, info)."""
    import sweeps

    start = time.perf_counter()
    pairs = utils.sweep(runs, workers=args.workers, results_dir=args.results_dir, device=args.device,
                        root=os.path.join(ROOT, "data"), return_models=True, **settings(args))
    seconds = time.perf_counter() - start
    run_seconds = [sum(history["seconds"]) for _, history in pairs]  # each run's own, recorded when it trained
    info = report.run_info(args.device, runs=len(runs), trained_runs=sweeps.LAST_SWEEP["trained"],
                           seeds=getattr(args, "seeds", None), sweep_seconds=round(seconds, 1), workers=args.workers,
                           mean_run_seconds=round(sum(run_seconds) / len(run_seconds), 1),
                           command=shlex.join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]))
    print(f"{len(runs)} runs in {seconds:.0f} s on {info['device']}")
    return pairs, seconds, info


def write_csv(path, header, rows):
    """A CSV file, written atomically."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(path, out.getvalue())


def write_json(path, value):
    """A JSON file (indented, non-ASCII kept as is), written atomically."""
    atomic_write(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n")


def read_csv(path):
    """Rows of a CSV file as dicts, numbers converted."""
    def number(value):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value

    with open(path, newline="", encoding="utf-8") as f:
        return [{k: number(v) for k, v in row.items()} for row in csv.DictReader(f)]
