"""The GPU figures in one prepared call of a few minutes (benchmarks/gpu.sh runs it).

    python -m benchmarks.gpu --out gpu_results     # on a GPU, with MNIST already in data/
    python -m benchmarks.gpu --dry-run             # the same logic on the CPU, tiny sizes, in seconds

Three steps (benchmarks/README.md says what each measures), each cut after the epoch that passes its
deadline, a share of --budget seconds plus what earlier steps left: one epoch per variant four ways,
the notebook's three variants, and 3 norms x 20 seeds x 20 epochs grouped. Every line goes to
<out>/speed_gpu.txt as soon as it is known, so a cut or killed run keeps what it measured; the 60
runs' histories go to <out>/seeds/.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch

import data as mnist
import grouped
import utils
from config import RunConfig, resolve_device
from files import ROOT, atomic_write, read_json, run_info, short_commit
from model import NORMS, count_parameters

SHARES = {"epochs": 0.25, "notebook": 0.15, "seeds": 0.55}  # of the budget; the rest is margin
TARGET = 99.5  # % test accuracy, mean over the seeds
FULL = dict(seeds=20, epochs=20, settings={})
TINY = dict(seeds=3, epochs=2, settings=dict(batch_size=32, eval_batch_size=32))  # --dry-run


class OutOfTime(Exception):
    """A step's deadline passed (checked after each epoch)."""


def stop_at(deadline):
    """An on_epoch callback (for utils.train or grouped.train_group) that raises OutOfTime after `deadline`."""
    def check(*_):
        if time.perf_counter() > deadline:
            raise OutOfTime
    return check


def train(configs, data, device, deadline, whole):
    """[(model, history)] of the configs as one grouped network (with cuda_graph, the whole step in a CUDA
    graph), or of configs[0] by utils.train where not `whole`."""
    if whole:
        return grouped.train_group(configs, data, device, on_epoch=stop_at(deadline))
    return [utils.train(configs[0], data, device, progress=False, on_epoch=stop_at(deadline))]


def failed(error):
    return "cut at its deadline" if isinstance(error, OutOfTime) else f"{type(error).__name__} {error}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_results", help="folder for speed_gpu.txt and the runs' histories")
    parser.add_argument("--budget", type=float, default=360, help="seconds for all the steps together")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes: checks the logic only")
    args = parser.parse_args(argv)
    device = torch.device("cpu") if args.dry_run else resolve_device(None)
    if device.type != "cuda" and not args.dry_run:
        parser.error(f"no CUDA GPU for {sys.executable} (torch {torch.__version__}): name another Python with "
                     "PYTHON=... in gpu.sh, or --dry-run runs the same logic on the CPU with tiny sizes")
    sizes = TINY if args.dry_run else FULL
    start = time.perf_counter()
    deadlines = start + args.budget * np.cumsum(list(SHARES.values()))  # when each step must end
    os.makedirs(args.out, exist_ok=True)
    path, lines = os.path.join(args.out, "speed_gpu.txt"), []

    def emit(line):
        print(line, flush=True)
        lines.append(line)
        atomic_write(path, "\n".join(lines) + "\n")

    info = run_info(device, budget=args.budget, dry_run=args.dry_run)
    data = mnist.synthetic(64, 32) if args.dry_run else mnist.load_tensors(os.path.join(ROOT, "data"), device)
    emit(f"# Output of: python -m benchmarks.gpu {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
         + f"   ({time.strftime('%Y-%m-%d')}; each step cut at its share of {args.budget:g} s)")
    emit(f"GPU: {info['device']}, torch {info['torch']}; code at commit {short_commit(info['git_commit'])}")
    seconds = one_epochs(emit, data, device, sizes, start, deadlines[0])
    notebook_variants(emit, data, device, sizes, seconds, deadlines[1])
    histories = seeds_grouped(emit, data, device, sizes, deadlines[2])
    if histories:
        configs = {n: RunConfig(norm=n, epochs=sizes["epochs"], **sizes["settings"]) for n in histories}
        utils.save_results(histories, configs, {n: count_parameters(c.net()) for n, c in configs.items()},
                           os.path.join(args.out, "seeds"), info)
    emit(f"# done in {time.perf_counter() - start:.0f} s; written to {path}")
    return 0


def one_epochs(emit, data, device, sizes, start, deadline):
    """Step 1: {(norm, kind): seconds of the second of 2 augmented epochs, for the whole group where it is
    grouped}, and a line per variant."""
    kinds = {"eager": "eager", "graph": "forward+backward graph", "whole": "whole-step graph",
             "grouped": f"{sizes['seeds']} runs grouped"}
    runs, seconds = [(n, k) for n in NORMS for k in kinds], {}
    # each run's deadline: an equal part of the step's time, a part's spare time passing to the next
    for (norm, kind), part in zip(runs, np.linspace(start, deadline, len(runs) + 1)[1:]):
        seeds = range(1, (sizes["seeds"] if kind == "grouped" else 1) + 1)
        configs = [RunConfig(norm=norm, seed=seed, epochs=2, clean_epochs=0, cuda_graph=kind != "eager",
                             **sizes["settings"]) for seed in seeds]
        try:  # a rare, one-shot call: a step that fails says so and leaves the others their time
            seconds[norm, kind] = train(configs, data, device, part, kind in ("whole", "grouped"))[0][1]["seconds"][1]
        except Exception as error:  # noqa: BLE001
            emit(f"{norm}: {kinds[kind]}: {failed(error)}")
    for norm in NORMS:
        eager = seconds.get((norm, "eager"))
        parts = [f"{kinds[k]} {seconds[norm, k]:.3f} s" + (f" ({eager / seconds[norm, k]:.1f}x eager)"
                                                             if eager and k != "eager" else "")
                 for k in kinds if (norm, k) in seconds]
        if (norm, "grouped") in seconds:
            parts.append(f"{seconds[norm, 'grouped'] / sizes['seeds']:.3f} s per run")
        if parts:
            emit(f"{norm}: one epoch " + ", ".join(parts))
    return seconds


def notebook_variants(emit, data, device, sizes, seconds, deadline):
    """Step 2: the notebook's runs (seed 1 of each variant) by the faster graph path of step 1."""
    notebook, total = read_json(os.path.join(ROOT, "Images", "notebook", "summary.json")), 0.0
    for norm in NORMS:
        whole = seconds.get((norm, "whole"), 0) <= seconds.get((norm, "graph"), float("inf"))
        config = RunConfig(norm=norm, epochs=sizes["epochs"], **sizes["settings"])
        began = time.perf_counter()
        try:
            history = train([config], data, device, deadline, whole)[0][1]
        except Exception as error:  # noqa: BLE001 - as in one_epochs
            emit(f"notebook {norm}: {failed(error)} after {time.perf_counter() - began:.1f} s")
            continue
        took = time.perf_counter() - began
        total += took
        emit(f"notebook {norm} (seed 1, {config.epochs} epochs, {'whole-step' if whole else 'forward+backward'} "
             f"graph): {took:.1f} s, final test accuracy {history['test_accuracy'][-1]:.2f}% "
             f"(CPU, committed: {notebook[norm]['final_test_accuracy']:.2f}%)")
    emit(f"notebook's three variants: {total:.1f} s of training in all")


def first_reaching(by_seed):
    """(epoch, seconds to its end, as a run's history counts them) where the mean test accuracy over the
    seeds first reaches TARGET; None if it never does."""
    reached = np.flatnonzero(np.mean([h["test_accuracy"] for h in by_seed.values()], axis=0) >= TARGET)
    if not len(reached):
        return None
    return int(reached[0]) + 1, float(np.mean([sum(h["seconds"][:reached[0] + 1]) for h in by_seed.values()]))


def train_seeds(configs, data, device, deadline):
    """{seed: history} of `configs` trained as one grouped run; past `deadline` (checked from epoch 2)
    the run is cut, and the histories keep the epochs every seed finished."""
    by_seed, check = {}, stop_at(deadline)

    def keep(run, epoch, history):  # cut from epoch 2: then by_seed holds every run, all at the same epoch
        by_seed[configs[run].seed] = history  # the history dict whose lists train_group appends to
        if epoch > 1:
            check()

    try:
        results = grouped.train_group(configs, data, device, on_epoch=keep)
    except OutOfTime:
        return by_seed
    return {c.seed: result[1] for c, result in zip(configs, results) if isinstance(result, tuple)}


def seeds_grouped(emit, data, device, sizes, deadline):
    """Step 3: each variant's seeds as one grouped run, against the committed CPU results; returns
    {norm: {seed: history}} of the variants that finished. A cut keeps the epochs that finished."""
    cpu_summary = read_json(os.path.join(ROOT, "Images", "summary.json"))
    cpu_histories = utils.load_histories(os.path.join(ROOT, "Images", "history.csv"))
    finished, began_all = {}, time.perf_counter()
    for norm, part in zip(NORMS, np.linspace(began_all, deadline, len(NORMS) + 1)[1:]):  # as in one_epochs
        configs = [RunConfig(norm=norm, seed=seed, epochs=sizes["epochs"], **sizes["settings"])
                   for seed in range(1, sizes["seeds"] + 1)]
        began = time.perf_counter()
        try:
            by_seed = train_seeds(configs, data, device, part)
        except Exception as error:  # noqa: BLE001 - as in one_epochs
            emit(f"{norm}: {sizes['seeds']} seeds grouped: {failed(error)}")
            continue
        epochs = min((len(h["test_accuracy"]) for h in by_seed.values()), default=0)
        if not epochs:
            emit(f"{norm}: {sizes['seeds']} seeds grouped: no epoch finished")
            continue
        if len(by_seed) == sizes["seeds"] and epochs == sizes["epochs"]:
            finished[norm] = by_seed
        accuracy = [h["test_accuracy"][epochs - 1] for h in by_seed.values()]
        mean, cpu = np.mean(accuracy), cpu_summary[norm]
        reached, cpu_reached = first_reaching(by_seed), first_reaching(cpu_histories[norm])
        emit(f"{norm}: {len(by_seed)} seeds x {epochs} epochs grouped" + (" (cut at its deadline)" if epochs <
             sizes["epochs"] else "") + f": {time.perf_counter() - began:.1f} s; mean over seeds first >= {TARGET}% "
             + (f"after epoch {reached[0]}, {reached[1]:.1f} s of the group's" if reached else "never")
             + " (CPU: " + (f"epoch {cpu_reached[0]}, {cpu_reached[1]:.0f} s per run" if cpu_reached else "never")
             + f"); final test accuracy {mean:.3f} ± {np.std(accuracy, ddof=len(accuracy) > 1):.3f}% (CPU, committed, "
             f"{len(cpu['seeds'])} seeds: {cpu['final_test_accuracy']:.3f} ± {cpu['final_test_accuracy_std']:.3f}%; "
             f"difference {mean - cpu['final_test_accuracy']:+.3f} points)")
    emit(f"{len(NORMS)} norms x {sizes['seeds']} seeds x {sizes['epochs']} epochs: "
         f"{time.perf_counter() - began_all:.1f} s")
    return finished


if __name__ == "__main__":
    sys.exit(main())
