"""What the study scripts share: their command line, the sweep they train through, their
tables' cells and the provenance sentence under each table. Run a study as a module from the
repository's root, e.g. `python -m studies.seeds`."""

import argparse
import dataclasses
import hashlib
import os
import shlex
import sys
import time

import torch

import sweeps
from config import RunConfig, resolve_device
from data import load_mnist, pixels
from files import ROOT, atomic_write, markdown_table, run_info, short_commit
from model import state_digest
from studies import stats

IMAGES = os.path.join(ROOT, "Images")


def parser(doc, seeds):
    """The options every study takes; `seeds` is its default list of seeds (None: no --seeds)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if seeds:
        p.add_argument("--seeds", type=int, nargs="+", default=seeds, help=f"seeds per variant (default {seeds})")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: see sweeps.sweep)")
    p.add_argument("--results-dir", default=os.path.join(ROOT, "runs"),
                   help="where finished runs are kept, so that a second call loads them (default runs/)")
    p.add_argument("--images", default=IMAGES, help="where the results, tables and figures go (default Images/)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the recipe's)")
    p.add_argument("--train-limit", type=int, help="train on the first N images (a quick trial; default all)")
    p.add_argument("--test-limit", type=int, help="test on the first N images (a quick trial; default all)")
    p.add_argument("--redraw", action="store_true",
                   help="only rewrite the tables and figures from the saved results; nothing is trained")
    return p


def parse(parser):
    """parser's arguments; a claim needs seeds, so every list of seeds holds at least 2 distinct ones."""
    args = parser.parse_args()
    for name in ("seeds", "real_seeds"):
        seeds = getattr(args, name, None)
        if seeds is not None and len(set(seeds)) < 2:
            parser.error(f"--{name.replace('_', '-')} {' '.join(map(str, seeds))}: a mean's confidence interval needs "
                         "at least 2 distinct seeds")
    return args


def test_images(args):
    """The MNIST test set (x in [0, 1], (N, 1, 28, 28); labels) on args.device, the first args.test_limit."""
    device = resolve_device(args.device)
    _, _, images, labels = load_mnist(os.path.join(ROOT, "data"))
    return pixels(images[:args.test_limit], device), labels[:args.test_limit].to(device, torch.int64)


def score_path(results_dir, norm, seed, model, kind, *versions):
    """Where a study keeps one model's scores of `kind`: beside its run, keyed by its weights and `versions`."""
    key = hashlib.sha256(" ".join(map(str, (state_digest(model.state_dict()), *versions))).encode()).hexdigest()[:20]
    return os.path.join(results_dir, f"{norm}-seed{seed}-{key}.{kind}.json")


def settings(args):
    """The RunConfig fields the command line sets for every run of a study."""
    names = {"epochs": args.epochs, "train_limit": args.train_limit, "test_limit": args.test_limit}
    return {name: value for name, value in names.items() if value is not None}


def sweep(runs, args):
    """Train (or load) `runs` through sweeps.sweep; returns ((model, history) pairs, info)."""
    start = time.perf_counter()
    pairs = sweeps.sweep(runs, workers=args.workers, results_dir=args.results_dir, device=args.device,
                         root=os.path.join(ROOT, "data"), return_models=True, **settings(args))
    seconds = time.perf_counter() - start
    run_seconds = [sum(history["seconds"]) for _, history in pairs]  # each run's own, recorded when it trained
    done = sweeps.LAST_SWEEP
    info = run_info(args.device, runs=len(runs), trained_runs=done["trained"], seeds=getattr(args, "seeds", None),
                    sweep_seconds=round(seconds, 1), workers=done["workers"], threads_per_worker=done["threads"],
                    mean_run_seconds=round(sum(run_seconds) / len(run_seconds), 1),
                    command=f"python -m studies.{os.path.basename(sys.argv[0]).removesuffix('.py')} "
                            + shlex.join(sys.argv[1:]))
    recipe = dataclasses.asdict(RunConfig(norm="B", **settings(args)))  # what every run shares, as saved
    info["recipe"] = {k: v for k, v in recipe.items() if k not in ("norm", "seed")}
    print(f"{len(runs)} runs in {seconds:.0f} s on {info['device']}")
    return pairs, info


def write_tables(folder, tables):
    """Each {name: Markdown} as folder/tables/name, where report.py finds it to splice."""
    for name, text in tables.items():
        atomic_write(os.path.join(folder, "tables", name), text)


def provenance(info):
    """One sentence saying how a set of results was produced: command, time, machine, commit."""
    parameters = info.get("parameters", {})
    runs, trained, seconds = parameters.get("runs"), parameters.get("trained_runs"), parameters.get("sweep_seconds")
    if trained == runs and seconds:
        how = f"trained in {seconds / 60:.1f} min"
    else:  # some or all runs came from the cache: their own times say what training cost
        how = f"{trained} of {runs} runs trained in that call, the rest from the run cache"
    return (f"Made by `{parameters.get('command')}` ({how}; {parameters.get('mean_run_seconds') / 60:.1f} min per run) "
            f"on {info['device']}, torch {info['torch']}, commit `{short_commit(info['git_commit'])}`.\n")


def mean_ci(values, digits=2):
    d = stats.describe(values)
    return f"{d['mean']:.{digits}f} ({d['ci'][0]:.{digits}f} to {d['ci'][1]:.{digits}f})"


def signed_ci(r, digits=2):
    """A difference with its CI, e.g. '+0.03 (−0.01 to +0.07)'."""
    low, mean, high = (f"{v:+.{digits}f}".replace("-", "−") for v in (r["ci"][0], r["mean"], r["ci"][1]))
    return f"{mean} ({low} to {high})"


def paired_by_seed(a, b):
    """stats.paired over the seeds two {seed: value} dicts share."""
    seeds = sorted(set(a) & set(b))
    return stats.paired([a[s] for s in seeds], [b[s] for s in seeds])


def seed_list(seeds):
    """'1–10' for a run of consecutive seeds, else '1, 3, 5'."""
    seeds = sorted(seeds)
    return f"{seeds[0]}–{seeds[-1]}" if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)) \
        else ", ".join(map(str, seeds))


def half_width(r):
    """Half the width of the 95% CI of a paired comparison (paired_by_seed's)."""
    low, high = r["ci"]
    return (high - low) / 2


def cells(r):
    """The two cells of a paired comparison (paired_by_seed's): the difference with its CI, and the verdict."""
    return [signed_ci(r), stats.verdict(r["ci"])]


def compared(a, b):
    """cells() of {seed: value} dicts a and b compared: a − b, paired by seed."""
    return cells(paired_by_seed(a, b))


def catches_up(verdicts):
    """The smallest size from which no verdict ({size: verdict}) is "lower", as text; "—" if the largest is.
    Cells that are no verdict (a "(reference)") are passed over."""
    sizes = sorted(k for k, v in verdicts.items() if v in stats.VERDICTS)
    caught = [n for i, n in enumerate(sizes) if all(verdicts[k] != "lower" for k in sizes[i:])]
    return f"{caught[0]:,}" if caught else "—"


def verdict_table(first, sizes, rows, letter):
    """A brief table: per row ({label: {size: verdict}}) its verdict at each size ("" where none)
    and, last, catches_up()."""
    return markdown_table([first, *(f"{n:,}" for n in sizes), f"no longer lower from {letter} ="],
                          [[label, *(v.get(n, "") for n in sizes), catches_up(v)] for label, v in rows.items()],
                          "l" + "l" * len(sizes) + "r")
