"""The README's result sections, generated from the files in Images/, and the statistics behind them.

    python report.py           # rewrite every generated section of README.md from Images/
    python report.py --check   # exit 1, naming the sections, if README.md disagrees with Images/
    python report.py --clean-notebook NOTEBOOK   # what `make run` does after executing it

A generated section sits between `<!-- begin: NAME -->` and `<!-- end: NAME -->` in README.md;
SECTIONS maps each NAME to the function that writes it. No result number is typed by hand.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys

import numpy as np
import torch

from config import resolve_device
from data import atomic_write
from model import NORMS

ROOT = os.path.dirname(os.path.abspath(__file__))
NORM_ORDER = tuple(NORMS)


# ---------------------------------------------------------------------------------------
# Provenance: what produced a set of results
# ---------------------------------------------------------------------------------------

def run_info(device, **parameters):
    """What produced a set of results: its parameters, the code version, library versions and
    the machine."""
    import torchvision

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=ROOT).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    given = os.environ.get("SOURCE_COMMIT")  # a copy of the tree whose own git is missing or stale
    commit = f"{given} (given by SOURCE_COMMIT, not checked)" if given else git("rev-parse", "HEAD") or "unknown"
    if not given and git("status", "--porcelain", "--", "*.py"):
        commit += " (with uncommitted changes to .py files)"
    device = resolve_device(device)
    return {
        "parameters": parameters,
        "git_commit": commit,
        "torch": str(torch.__version__),  # a TorchVersion, which weights_only loading refuses
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
    }


def device_name(device):
    """The GPU's name, or the CPU's model and core count (timings hold for that machine only)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"CPU: {model}, {os.cpu_count()} cores"



# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------

def markdown_table(header, rows, align=None):
    """A Markdown table; align is a string of 'l'/'r' per column (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def notebook_table(images_dir, how="Trained by `make run`"):
    """The notebook run: one row per variant from its summary.json."""
    summary = read_json(os.path.join(images_dir, "summary.json"))
    rows = []
    for norm in (n for n in NORM_ORDER if n in summary):
        s = summary[norm]
        spread = f" ± {s['final_test_accuracy_std']:.2f}" if len(s["seeds"]) > 1 else ""
        rows.append([s["name"], f"{s['params']:,}", f"{s['final_test_accuracy']:.2f}%{spread}",
                     f"{s['final_test_loss']:.4f}", f"{s['seconds']:.0f} s"])
    run = summary["run"]
    table = markdown_table(["variant (seed " + ", ".join(str(seed) for seed in s["seeds"]) + ")", "params",
                            "final test accuracy", "final test loss", "training time"], rows)
    epochs = max(summary[n]["epochs"] for n in NORM_ORDER if n in summary)
    return (f"{table}\n\nFinal = the last epoch ({epochs}). {how} at commit `{run['git_commit'][:7]}` on "
            f"{run['device']} (torch {run['torch']}).")


def notebook_discussion(images_dir):
    """The notebook's discussion as Markdown bullets, every number read from its results."""
    summary = read_json(os.path.join(images_dir, "summary.json"))
    mistakes = read_json(os.path.join(images_dir, "misclassified.json"))
    norms = [n for n in NORM_ORDER if n in summary]
    name = {n: summary[n]["name"] for n in norms}
    from utils import load_histories

    histories = load_histories(os.path.join(images_dir, "history.csv"))
    first = {n: next(iter(histories[n].values())) for n in norms}
    final = {n: summary[n]["final_test_accuracy"] for n in norms}
    ranked = sorted(norms, key=lambda n: -final[n])
    epochs = len(first[norms[0]]["test_accuracy"])
    later = {n: np.abs(np.diff(first[n]["test_accuracy"][epochs // 2:])) for n in norms}
    swing_norm = max(norms, key=lambda n: later[n].max() if len(later[n]) else 0)
    gaps = [abs(summary[n]["final_train_accuracy"] - final[n]) for n in norms]
    clean = {saved_config(summary[n].get("config", {}))["clean_epochs"] for n in norms}
    batches = ("on augmented batches" if clean == {0} else "on the training images as they are (the last "
               f"{'/'.join(map(str, sorted(clean)))} epochs are unaugmented)")
    shared = set.intersection(*({m["index"] for m in mistakes[n]} for n in norms))
    bullets = [
        "**Final-epoch test accuracy**: " + ", ".join(f"{name[n]} **{final[n]:.2f}%**" for n in ranked)
        + f"; {final[ranked[0]] - final[ranked[-1]]:.2f} points from first to last.",
        "**After one epoch**: " + ", ".join(f"{name[n]} {first[n]['test_accuracy'][0]:.2f}%" for n in norms) + ".",
        f"**Noise**: in the second half of training the test accuracy moves by up to "
        f"{later[swing_norm].max() if len(later[swing_norm]) else 0:.2f} points from one epoch to the next "
        f"({name[swing_norm]}), so one seed's final differences do not rank the norms; the README's "
        "study over many seeds does.",
        f"**Train against test**: at the last epoch the training accuracy {batches} is within "
        f"{max(gaps):.2f} points of the test accuracy for every variant.",
        f"**Shared mistakes**: {len(shared)} test image(s) "
        + (f"({', '.join(f'#{i}' for i in sorted(shared))}) " if shared else "")
        + "are among the 10 most confident mistakes of all three models.",
    ]
    return "\n".join(f"- {b}" for b in bullets)


def file_block(path):
    """A results file shown whole, as a code block (lab notes quote their outputs this way)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f"`{path}`:\n\n```\n{f.read().rstrip()}\n```"


def images(*parts):
    return os.path.join(ROOT, "Images", *parts)


def previous_recipe(*parts):
    """The seeds study of the recipe before round 13's finalist was adopted (ReLU, every epoch
    augmented): Images/summary.json and seeds.csv as they were at commit 3df6022."""
    return os.path.join(ROOT, "studies", "previous_recipe", *parts)


def signed(value, digits=2):
    return f"{value:+.{digits}f}".replace("-", "−")


def interval(ci, digits=2, sign=False):
    low, high = (signed(v, digits) if sign else f"{v:.{digits}f}" for v in ci)
    return f"{low} to {high}"


def signed_ci(r):
    """A difference with its CI, e.g. '+0.03 (−0.01 to +0.07)'."""
    return f"{signed(r['mean'])} ({interval(r['ci'], sign=True)})"


def provenance(info, what):
    """One sentence saying how a set of results was produced."""
    parameters = info.get("parameters", {})
    seconds, trained = parameters.get("sweep_seconds"), parameters.get("trained_runs", parameters.get("runs"))
    per_run = parameters.get("mean_run_seconds")
    per_run = f"{per_run / 60:.1f} min per run on average" if per_run else ""
    if seconds and trained == parameters.get("runs"):
        took = f" in {seconds / 60:.1f} min"
    elif seconds and trained == 0:  # nothing trained in this call: say where the table came from
        return (f"Tabulated by `{parameters.get('command')}` from its {parameters['runs']} cached runs, trained "
                f"earlier by the same code{f' ({per_run})' if per_run else ''}, on {info['device']} "
                f"(torch {info['torch']}, commit `{info['git_commit'][:7]}`).")
    elif seconds:
        took = (f" ({trained} of {parameters['runs']} runs trained in that call, {seconds / 60:.1f} min; the rest "
                f"loaded from earlier calls{f', {per_run}' if per_run else ''})")
    else:
        took = ""
    return (f"{what} `{parameters.get('command', 'make run')}`{took} on {info['device']} "
            f"(torch {info['torch']}, commit `{info['git_commit'][:7]}`).")


def section_headline():
    """The many-seed study: per variant mean, CI, sd, range; whether the 99.5% target is met."""
    from studies import stats

    summary = read_json(images("summary.json"))
    norms = [n for n in NORM_ORDER if n in summary]
    described = {n: stats.describe(summary[n]["final_test_accuracy_per_seed"]) for n in norms}
    rows = [[summary[n]["name"], f"{summary[n]['params']:,}", f"**{d['mean']:.2f}%**", interval(d["ci"]),
             f"{d['sd']:.2f}", f"{d['min']:.2f} to {d['max']:.2f}", f"{summary[n]['final_test_loss']:.4f}"]
            for n, d in described.items()]
    seeds = sorted({d["n"] for d in described.values()})
    table = markdown_table(["variant", "params", "mean final test accuracy", "95% CI of the mean", "sd",
                            "min to max", "mean final test loss"], rows)
    met = [summary[n]["name"] for n, d in described.items() if d["mean"] >= 99.5]
    missed = [summary[n]["name"] for n, d in described.items() if d["mean"] < 99.5]
    straddle = [summary[n]["name"] for n, d in described.items() if d["ci"][0] < 99.5 <= d["ci"][1]]
    target = ((f"met by {' and '.join(met) or 'none'}; missed by {' and '.join(missed)}" if missed
               else f"met by all {len(met)} variants")
              + (f"; the 95% CI of {' and '.join(straddle)} includes 99.50%" if straddle else ""))
    return (f"{table}\n\n{'/'.join(map(str, seeds))} seeds per variant, {summary[norms[0]]['epochs']} epochs, "
            f"the accuracy of the final epoch (never the best one). The target, a mean of at least 99.50%: "
            f"{target}. " + provenance(summary["run"], "Trained by"))


def section_comparisons():
    """Paired differences between the norms over the same seeds, with what they support."""
    from studies import stats

    summary = read_json(images("summary.json"))
    norms = [n for n in NORM_ORDER if n in summary]
    pairs = [(a, b) for i, a in enumerate(norms) for b in norms[i + 1:]]
    per_seed = {n: seed_scores(summary, n) for n in norms}
    results = [paired_by_seed(per_seed[a], per_seed[b]) for a, b in pairs]
    adjusted = stats.holm([r["p"] for r in results])
    if min(r["n"] for r in results) < 2:
        return "Paired comparisons need at least 2 seeds per variant."
    from studies.search import CHOSEN

    scores = split_scores(CHOSEN, images("summary.json"))
    validation = {name: paired_by_seed(scores["validation"][a], scores["validation"][b])
                  for a, b, name in NORM_PAIRS} if scores else {}
    rows, real = [], []
    for (a, b), r, p_holm in zip(pairs, results, adjusted):
        name = f"{NORMS[a]} − {NORMS[b]}"
        if p_holm < 0.05:
            real.append(name)
        verdict = f"**{NORMS[a] if r['mean'] > 0 else NORMS[b]} higher**" if p_holm < 0.05 else "within noise"
        rows.append([name, f"{signed(r['mean'])} points", interval(r["ci"], sign=True), f"{r['p']:.3f}",
                     f"{p_holm:.3f}", verdict]
                    + ([signed_ci(validation[name])]
                       if validation else []))
    header = ["difference (same seeds)", "mean", "95% CI", "p (paired t-test)", f"p (Holm, {len(pairs)} tests)",
              "verdict"] + (["validation split (95% CI)"] if validation else [])
    table = markdown_table(header, rows, align="lrrrrl" + "r" * bool(validation))
    words = (f"No difference between the norms survives Holm's correction for {len(pairs)} tests." if not real else
             f"Beyond the noise (Holm-adjusted p < 0.05): {', '.join(real)}; the rest is within noise.")
    if validation:
        clear = [name for name, v in validation.items() if not v["ci"][0] <= 0 <= v["ci"][1]]
        seeds = next(iter(validation.values()))["n"]
        apart = [name for name, _, p in splits_disagree(scores) if p < 0.05]
        rounds = " and ".join(map(str, scores["rounds"]))
        words += (f" Last column: the same recipe trained on 50,000 training images, scored on the last 10,000 "
                  f"([search round {rounds}](studies/README.md#how-the-recipe-was-chosen), {seeds} seeds): "
                  f"{'the CI excludes 0 for ' + ', '.join(clear) if clear else 'every CI includes 0'}"
                  + (f"; {', '.join(apart)} differs between the splits (Welch)." if apart else "."))
    return f"{table}\n\n{words}"


def batch_size_results():
    """(the finding in one sentence, the full tables): the ghost-batch curve and the real-batch
    check, with differences paired by seed."""
    from studies import stats
    from studies.common import read_csv

    rows = read_csv(images("batch_size.csv"))
    ghost = [r for r in rows if r["kind"] == "ghost"]
    sizes = sorted({r["norm_batch"] for r in ghost})

    def values(norm, kind, key, value):
        return {r["seed"]: r["test_accuracy"] for r in rows
                if r["norm"] == norm and r["kind"] == kind and r[key] == value}

    def cell(by_seed):
        d = stats.describe(list(by_seed.values()))
        return f"{d['mean']:.2f} ± {d['sd']:.2f}"

    def difference(a, b):
        return signed_ci(paired_by_seed(a, b))

    largest = values("B", "ghost", "norm_batch", sizes[-1])
    ghost_rows = [[k, cell(values("B", "ghost", "norm_batch", k)),
                   difference(values("B", "ghost", "norm_batch", k), largest) if k != sizes[-1] else "(reference)",
                   difference(values("B", "ghost", "norm_batch", k), values("G", "ghost", "norm_batch", k)),
                   cell(values("L", "ghost", "norm_batch", k)), cell(values("G", "ghost", "norm_batch", k))]
                  for k in sizes]
    ghost_table = markdown_table(["images per norm batch", "BatchNorm (ghost)",
                                  f"BatchNorm − its k={sizes[-1]} (95% CI)",
                                  "BatchNorm − GroupNorm (95% CI)", "LayerNorm", "GroupNorm"], ghost_rows)
    real = [r for r in rows if r["kind"] == "real"]
    real_rows = [[size, f"{next(r['max_lr'] for r in real if r['batch_size'] == size):g}",
                  *(cell(values(n, "real", "batch_size", size)) for n in NORM_ORDER)]
                 for size in sorted({r["batch_size"] for r in real})]
    base = next(r for r in ghost if r["norm_batch"] == sizes[-1])
    real_seeds = {r["seed"] for r in real}
    real_rows.append([f"{base['batch_size']} (the study's recipe)", f"{base['max_lr']:g}",
                      *(cell({seed: v for seed, v in values(n, "ghost", "norm_batch", sizes[-1]).items()
                              if seed in real_seeds}) for n in NORM_ORDER)])
    real_table = markdown_table(["real batch", "peak lr", "BatchNorm", "LayerNorm", "GroupNorm"], real_rows)
    def verdicts(reference, include_last):
        """'below at k = 2; within noise at k = 4, 8' from the paired CIs, empty verdicts left out."""
        ks = sizes if include_last else sizes[:-1]
        cis = {k: paired_by_seed(values("B", "ghost", "norm_batch", k), reference(k))["ci"] for k in ks}
        groups = [(word, [k for k in ks if test(cis[k])]) for word, test in
                  [("below", lambda ci: ci[1] < 0), ("within noise", lambda ci: ci[0] <= 0 <= ci[1]),
                   ("above", lambda ci: ci[0] > 0)]]
        return "; ".join(f"{word} at k = {', '.join(map(str, found))}" for word, found in groups if found)

    def resolution():
        cis = [paired_by_seed(values("B", "ghost", "norm_batch", k), reference)["ci"]
               for k in sizes for reference in (largest, values("G", "ghost", "norm_batch", k))
               if not (k == sizes[-1] and reference is largest)]
        return float(np.mean([(high - low) / 2 for low, high in cis]))

    smallest = paired_by_seed(values("B", "ghost", "norm_batch", sizes[0]), largest)
    finding = (f"BatchNorm with ghost batches of k images, against its own k={sizes[-1]} (95% CI of the paired "
               f"difference over {len(largest)} seeds): {verdicts(lambda k: largest, False)}. At k = {sizes[0]} "
               f"the mean difference is {signed(smallest['mean'])} points. Against GroupNorm on the same seeds: "
               f"{verdicts(lambda k: values('G', 'ghost', 'norm_batch', k), True)} ({len(largest)} seeds resolve "
               f"differences above about {resolution():.2f} points, these CIs' mean half-width).")
    tables = (f"Final test accuracy (%), mean ± sd over {len({r['seed'] for r in ghost})} seeds; differences in "
              f"points, paired by seed.\n\n{ghost_table}\n\nReal batches (mean ± sd over {len(real_seeds)} seeds), "
              f"the learning rate scaled by √(batch / 128):\n\n{real_table}")
    return finding, tables


# RunConfig fields added after some results were saved, with the value that computes what runs
# computed before the field existed (the recipe's defaults have moved on since: SiLU, clean epochs).
FIELDS_BEFORE_ADDED = {"activation": "relu", "clean_epochs": 0}


def saved_config(saved):
    """A configuration saved with a result, with every RunConfig field added since at the value that
    keeps the behaviour runs had before it existed (FIELDS_BEFORE_ADDED, else the field's default)."""
    import dataclasses

    from config import RunConfig

    return {**{f.name: f.default for f in dataclasses.fields(RunConfig)}, **FIELDS_BEFORE_ADDED, **saved}


def batch_size_recipe_changes():
    """(what produced batch_size.csv, in one sentence; the RunConfig fields its recipe had
    otherwise than today's defaults)."""
    import dataclasses

    from config import RunConfig

    info = read_json(images("batch_size.json"))
    recipe = {k: v for k, v in dataclasses.asdict(RunConfig(norm="B")).items() if k not in ("norm", "seed")}
    trained = saved_config(info.get("recipe", {}))
    return provenance(info, "Trained by"), sorted(k for k in recipe if trained[k] != recipe[k])


def stale_note(changed):
    return f" Trained with another recipe than today's ({', '.join(changed)} differ): rerun it." if changed else ""


def shift_rows():
    """shift.csv's rows and the models in it, in MODELS order."""
    from studies.common import read_csv
    from studies.shift import MODELS

    rows = read_csv(images("shift.csv"))
    return rows, [m for m in MODELS if any(r["norm"] == m for r in rows)]


def mean_by_seed(rows, model, keep):
    """{seed: mean accuracy of `model` over the rows that keep(row) accepts}."""
    by_seed = {}
    for r in rows:
        if r["norm"] == model and keep(r):
            by_seed.setdefault(r["seed"], []).append(r["test_accuracy"])
    return {seed: float(np.mean(values)) for seed, values in by_seed.items()}


def shift_table(by_severity):
    """Accuracy per corruption (and per severity, or averaged over them), mean ± sd over seeds,
    with the mean over all corrupted sets last."""
    from studies import stats
    from studies.shift import CORRUPTIONS, MODELS

    rows, models = shift_rows()
    groups = [(c, [s]) for c, severities in CORRUPTIONS.items() for s in severities] if by_severity else \
        list(CORRUPTIONS.items())
    table_rows = []
    for corruption, severities in groups:
        cells = []
        for model in models:
            d = stats.describe(list(mean_by_seed(rows, model, lambda r: r["corruption"] == corruption
                                                 and r["severity"] in severities).values()))
            cells.append(f"{d['mean']:.2f} ± {d['sd']:.2f}")
        label = "none (clean)" if corruption == "none" else corruption
        table_rows.append([label, ", ".join(map(str, severities)), *cells])
    corrupted = {m: mean_by_seed(rows, m, lambda r: r["corruption"] != "none") for m in models}
    table_rows.append(["**all corrupted sets**", "", *(f"**{np.mean(list(corrupted[m].values())):.2f}**"
                                                         for m in models)])
    header = ["corruption", "severity" if by_severity else "severities (mean over them)", *(MODELS[m] for m in models)]
    return markdown_table(header, table_rows), rows, models, corrupted


def section_batch_size():
    finding = batch_size_results()[0]
    _, changed = batch_size_recipe_changes()
    return (finding + stale_note(changed)
            + " Every size and the real-batch check: [studies/README.md](studies/README.md#batch-size).")


def section_batch_size_full():
    tables = batch_size_results()[1]
    made, changed = batch_size_recipe_changes()
    return f"{tables}\n\n{made}{stale_note(changed)}"


def section_shift():
    """The paired differences over all corrupted sets and, per corruption, who is higher."""
    from studies.shift import CORRUPTIONS, MODELS

    _, rows, models, corrupted = shift_table(by_severity=False)
    lines, findings = [], []
    for model in models[1:]:
        r = paired_by_seed(corrupted[model], corrupted["B"])
        lines.append(f"{MODELS[model]} {signed(r['mean'])} points ({interval(r['ci'], sign=True)})")
        higher, lower, level = [], [], []
        for corruption in (c for c in CORRUPTIONS if c != "none"):
            r = paired_by_seed(*(mean_by_seed(rows, m, lambda row: row["corruption"] == corruption)
                                 for m in (model, "B")))
            (higher if r["ci"][0] > 0 else lower if r["ci"][1] < 0 else level).append(corruption)
        said = [f"{word} on {', '.join(found)}" for word, found in (("higher", higher), ("lower", lower)) if found]
        findings.append(f"{MODELS[model]} {', '.join(said) or 'level on every one'}")  # "none" names the clean set
    seeds = len({r["seed"] for r in rows})
    return (f"Against {MODELS['B']}, mean accuracy over all corrupted sets, paired over {seeds} seeds (95% CI): "
            + "; ".join(lines) + ". Per corruption (paired CI clear of 0): "
            + "; ".join(findings) + "; level elsewhere. Tables: [studies/README.md](studies/README.md#distribution-shift).")


def section_shift_table():
    """Accuracy per corruption, mean over its severities, mean ± sd over seeds."""
    return shift_table(by_severity=False)[0]


def seed_scores(summary, norm):
    """{seed: final test accuracy} of one variant of a seeds-study summary.json."""
    return dict(zip(summary[norm]["seeds"], summary[norm]["final_test_accuracy_per_seed"]))


def paired_by_seed(a, b):
    """stats.paired over the seeds two {seed: value} dicts share."""
    from studies import stats

    seeds = sorted(set(a) & set(b))
    return stats.paired([a[s] for s in seeds], [b[s] for s in seeds])


def section_shift_full():
    return shift_table(by_severity=True)[0]


def section_notebook():
    """The notebook's table, and how long the whole notebook took."""
    timing = read_json(images("notebook", "timing.json"))
    return notebook_table(images("notebook")) + f" The whole notebook: {timing['notebook_seconds']:.0f} s."


def section_recipe():
    """The network and the recipe, written from model.LAYOUT and RunConfig's defaults."""
    import model
    from config import RunConfig

    c = RunConfig()
    widths = sorted(set(model.layout_channels(c.layout)))
    params = {n: model.count_parameters(RunConfig(norm=n).net()) for n in NORM_ORDER}
    counts = (f"{params['B']:,} parameters for every norm" if len(set(params.values())) == 1
              else ", ".join(f"{NORMS[n]} {p:,}" for n, p in params.items()) + " parameters")
    return (f"- **Network** ([`model.py`](model.py), torch only): a space-to-depth stem (2x2 patches become 4 "
            f"channels), the blocks `{c.layout}` (`model.LAYOUT`: 3x3 convolutions, v unpadded, p max pooling; "
            f"{'/'.join(map(str, widths))} channels), each convolution followed by the norm and "
            f"{model.ACTIVATIONS[c.activation].__name__}, global "
            f"average pooling, a 1x1 convolution to 10 classes: {counts}. BatchNorm normalizes over (N, H, W) per channel, LayerNorm over (C, H, W) "
            f"per image, GroupNorm over (C/{RunConfig(norm='G').groups}, H, W) per image and group.\n"
            f"- **Recipe** (`RunConfig`'s defaults): {c.optimizer.replace('adamw', 'AdamW')} with weight decay "
            f"{c.weight_decay:g}, OneCycle to lr {c.max_lr:g}, batch {c.batch_size}, {c.epochs} epochs; random "
            f"rotation up to {c.rotation:g}°, shift up to {c.translation * 28:.1f} px and elastic distortion "
            f"(Simard et al.: α = {c.elastic:g}, smoothed over 4 px)"
            + (f", none in the last {c.clean_epochs} epochs" if c.clean_epochs else "") + "; cross-entropy plus, for BatchNorm only, λ·Σ|w| over the "
            f"convolution weights with λ = {RunConfig(norm='B').l1_lambda:g}.")


def section_finalists():
    """Each search finalist's test-set study (studies/seeds.py --candidate) against the seeds study
    of the recipe it would replace (studies/previous_recipe/ once one was adopted, else the
    headline study), per norm and paired by seed."""
    from studies import search, stats

    if not search.FINALISTS:
        return "No candidate has become a finalist: the test set has scored the chosen recipe only."
    paths = {name: os.path.join(ROOT, "studies", "finalists", search.finalist_folder(name), "summary.json")
             for name in search.FINALISTS}
    scored = [name for name, path in paths.items() if os.path.exists(path)]
    waiting = [name for name in search.FINALISTS if name not in scored]
    parts = [f"Finalists: {len(search.FINALISTS)}; scored on the test set: {len(scored)}."
             + (f" Not yet scored: {', '.join(waiting)} (`python studies/seeds.py --candidate NAME`)." if waiting else "")]
    adopted, before = [choice for choice, _ in search.CHOICES], previous_recipe("summary.json")
    today = read_json(images("summary.json")) if scored else None
    replaced = read_json(before) if scored and os.path.exists(before) else today
    for name in scored:  # an adopted finalist against the recipe it replaced, any other against today's
        recipe = replaced if name in adopted else today
        path, summary = paths[name], read_json(paths[name])
        norms = [n for n in NORM_ORDER if n in summary]
        rows = []
        for n in norms:
            mine, theirs = seed_scores(summary, n), seed_scores(recipe, n)
            d, shared = stats.describe(list(mine.values())), sorted(set(mine) & set(theirs))
            gain = paired_by_seed(mine, theirs)
            rows.append([summary[n]["name"], f"{summary[n]['params']:,}", f"**{d['mean']:.2f}%** ({interval(d['ci'])})",
                         f"{np.mean([theirs[s] for s in shared]):.2f}%", signed_ci(gain),
                         "yes" if d["mean"] >= 99.5 else "no"])
        seeds = sorted({len(summary[n]["seeds"]) for n in norms})
        table = markdown_table(["variant", "params", "finalist: mean final test accuracy (95% CI)",
                                "the recipe it replaces, same seeds", "finalist − that recipe, paired by seed (95% CI)",
                                "mean ≥ 99.50%?"], rows)
        adopted = " (adopted: now the recipe, whose seeds study is the headline)" if name == search.CHOSEN else ""
        parts.append(f"**{name}**{adopted}, "
                     f"{'/'.join(map(str, seeds))} seeds per variant, trained on all 60,000 images:\n\n{table}\n\n"
                     + provenance(summary["run"], "Trained by"))
    return "\n\n".join(parts)


def section_search():
    """Every candidate of the recipe search: validation accuracy per norm and overall."""
    from studies import stats
    from studies.common import read_csv

    rows = read_csv(os.path.join(ROOT, "studies", "search.csv"))
    rounds = read_json(os.path.join(ROOT, "studies", "search.json"))
    table_rows = []
    for number in sorted({r["round"] for r in rows}):
        for name in dict.fromkeys(r["candidate"] for r in rows if r["round"] == number):
            runs = [r for r in rows if r["round"] == number and r["candidate"] == name]
            overall = stats.describe([r["val_accuracy"] for r in runs])
            per_norm = {n: [r["val_accuracy"] for r in runs if r["norm"] == n] for n in NORM_ORDER}
            table_rows.append([number, name, f"`{runs[0]['layout']}`", f"{runs[0]['params']:,}", runs[0]["overrides"],
                               *(f"{np.mean(v):.2f}" if v else "-" for v in per_norm.values()),
                               f"**{overall['mean']:.3f}** ({interval(overall['ci'])})", len(runs)])
    table = markdown_table(["round", "candidate", "layout", "params", "other settings", "B", "L", "G",
                            "mean (95% CI)", "runs"], table_rows, align="rllrlrrrrr")
    made = " ".join(f"Round {n}: " + provenance(info, "ran") for n, info in sorted(rounds.items(), key=lambda item: int(item[0])))
    dash = " (-: a norm the round did not train)" if any("-" in row[5:8] for row in table_rows) else ""
    return (f"Final validation accuracy (%), mean per norm over the round's seeds{dash}.\n\n{table}\n\n"
            f"{search_choice(rows)}\n\n{made}")


def search_choice(rows):
    """Each choice (search.CHOICES) against what it was paired with, over the (norm, seed) runs
    they share; and each candidate tried and not adopted whose runs scored their network before
    and after the change (precise BN), paired network by network."""
    from studies import stats
    from studies.search import CHOICES

    steps = []
    for name, against in CHOICES:
        chosen, base = candidate_scores(rows, name), candidate_scores(rows, against)
        shared = sorted(set(chosen) & set(base))
        r = stats.paired([chosen[k] for k in shared], [base[k] for k in shared])
        steps.append(f"**Chosen: {name}**, paired with *{against}* over the {len(shared)} runs (norm, seed) they "
                     f"share: {signed(r['mean'], 3)} points of validation accuracy (95% CI "
                     f"{interval(r['ci'], 3, sign=True)}, p = {r['p']:.2g}); "
                     + ("the CI includes 0: the gain is small next to the seed-to-seed noise." if r["ci"][0] <= 0 <= r["ci"][1]
                        else "the CI excludes 0."))
    text = (f"`CHOICES` in [`search.py`](search.py), in order; `RunConfig`'s defaults are the last.\n\n"
            + "\n\n".join(steps))
    within = [r for r in rows if r.get("val_accuracy_before_precise_bn", "") != ""]
    for name in dict.fromkeys(r["candidate"] for r in within):
        mine = [r for r in within if r["candidate"] == name]
        r = stats.paired([m["val_accuracy"] for m in mine], [m["val_accuracy_before_precise_bn"] for m in mine])
        text += (f"\n\n**Not adopted: {name}** (round {mine[0]['round']}). Each of its {len(mine)} BatchNorm networks "
                 f"was scored before and after precise BN (running statistics recomputed on the clean training "
                 f"images): {signed(r['mean'], 3)} points (95% CI {interval(r['ci'], 3, sign=True)}, p = {r['p']:.2g})"
                 + (", within noise." if r["ci"][0] <= 0 <= r["ci"][1] else "."))
    return text + against_text(rows)


def candidate_scores(rows, name, round_=None):
    """{(norm, seed): validation accuracy} of one search candidate's runs (of one round, if given)."""
    return {(r["norm"], r["seed"]): r["val_accuracy"] for r in rows
            if r["candidate"] == name and round_ in (None, r["round"])}


def against_text(rows):
    """Each candidate of a round that names what it is `against` (search.ROUNDS), paired seed by
    seed with that candidate's runs of the same norm, and judged by the round's rule: adopted only
    if the paired gain's 95% CI lies above 0."""
    from studies import stats
    from studies.search import ROUNDS

    text = ""
    for number, round_ in sorted(ROUNDS.items()):
        if "against" not in round_ or not any(r["round"] == number for r in rows):
            continue
        # the check's runs of the latest round up to this one that trained it (a check could be rerun)
        where = max((r["round"] for r in rows if r["candidate"] == round_["against"] and r["round"] <= number),
                    default=None)
        against = candidate_scores(rows, round_["against"], where) if where is not None else {}
        for name in (n for n in round_["candidates"] if n != round_["against"]):  # not the check itself
            mine = candidate_scores(rows, name, number)  # a name rerun in a later round is judged per round
            shared = sorted(set(mine) & set(against))
            if len(shared) < 2:
                text += f"\n\n**{name}** (round {number}): fewer than 2 runs to pair with {round_['against']}."
                continue
            r = stats.paired([mine[k] for k in shared], [against[k] for k in shared])
            low, high = r["ci"]
            verdict, outcome = (("Met the rule", "above 0") if low > 0 else
                                ("Not adopted", "below 0: lower") if high < 0 else
                                ("Not adopted", "includes 0: within noise"))
            text += (f"\n\n**{verdict}: {name}** (round {number}): {signed(r['mean'], 3)} points of validation "
                     f"accuracy against *{round_['against']}* (round {where}), paired by norm and seed "
                     f"({len(shared)} pairs); 95% CI {interval(r['ci'], 3, sign=True)}, p = {r['p']:.2g}, {outcome}.")
    return text


NORM_PAIRS = [(a, b, f"{NORMS[a]} − {NORMS[b]}") for i, a in enumerate(NORM_ORDER) for b in NORM_ORDER[i + 1:]]


def split_scores(candidate, summary_path):
    """Final accuracy per norm as {seed: accuracy} of one recipe: "validation" (a search candidate's
    runs on 50,000 training images, scored on the last 10,000) and "test" (that recipe's seeds
    study, summary_path); for round 6's check, once studies/splits.py has run, also
    "same_validation" and "same_test" (round 6's networks scored on both). None when the
    candidate has no runs."""
    from studies.common import read_csv
    from studies.search import CHECK

    rows = [r for r in read_csv(os.path.join(ROOT, "studies", "search.csv")) if r["candidate"] == candidate]
    if not rows:
        return None
    summary = read_json(summary_path)
    scores = {"validation": {n: {r["seed"]: r["val_accuracy"] for r in rows if r["norm"] == n} for n in NORM_ORDER},
              "test": {n: seed_scores(summary, n) for n in NORM_ORDER},
              "rounds": sorted({r["round"] for r in rows})}
    if candidate == CHECK and os.path.exists(images("splits.csv")):
        same = read_csv(images("splits.csv"))
        for key, column in (("same_validation", "val_accuracy"), ("same_test", "test_accuracy")):
            scores[key] = {n: {r["seed"]: r[column] for r in same if r["norm"] == n} for n in NORM_ORDER}
    return scores


def differences(by_norm, a, b):
    """a − b per seed, over the seeds both have."""
    return [by_norm[a][seed] - by_norm[b][seed] for seed in sorted(set(by_norm[a]) & set(by_norm[b]))]


def splits_disagree(scores):
    """[(pair name, Welch comparison of its per-seed test differences with its validation ones,
    Holm-adjusted p over the pairs)]; a pair whose adjusted p is below 0.05 differs between the splits."""
    from studies import stats

    welch = [(name, stats.welch(differences(scores["test"], a, b), differences(scores["validation"], a, b)))
             for a, b, name in NORM_PAIRS]
    return [(name, w, p) for (name, w), p in zip(welch, stats.holm([w["p"] for _, w in welch]))]


def section_validation_table():
    """The norms on the validation split and the test set, per norm and paired; with
    studies/splits.py, round 6's networks scored on the test set too."""
    from studies import stats
    from studies.search import CHECK

    summary_path = previous_recipe("summary.json")  # the recipe round 6 trained
    scores = split_scores(CHECK, summary_path)
    if scores is None:
        return "*Not run yet: `python studies/search.py --rounds 6` makes it.*"
    columns = ["validation"] + (["same_test"] if "same_test" in scores else []) + ["test"]
    summary = read_json(summary_path)

    def cell(d):
        return f"{d['mean']:.2f} ({interval(d['ci'])})"

    lines = [[summary[n]["name"], *(cell(stats.describe(list(scores[c][n].values()))) for c in columns)]
             for n in NORM_ORDER]
    lines += [[name, *(signed_ci(paired_by_seed(scores[c][a], scores[c][b])) for c in columns)] for a, b, name in NORM_PAIRS]
    n_val, n_test = len(scores["validation"]["B"]), len(scores["test"]["B"])
    header = ["final accuracy (%), mean (95% CI); differences paired by seed",
              f"validation split (round 6, {n_val} seeds; 50,000 training images)"]
    header += ["test set, the same networks (`studies/splits.py`)"] if "same_test" in scores else []
    header += [f"test set (that recipe's seeds study, {n_test} seeds; 60,000 training images)"]
    table = markdown_table(header, lines)
    disagree = splits_disagree(scores)
    gaps = [f"{name} {signed_ci(w)}, p = {w['p']:.2g}, Holm {p:.2g}" for name, w, p in disagree]
    apart = [name for name, _, p in disagree if p < 0.05]
    text = (f"{table}\n\nEach difference on the test set (60,000 training images) minus the same difference on the "
            f"validation split (Welch's t: different runs), 95% CI: " + "; ".join(gaps) + ". "
            + (f"The two disagree on {', '.join(apart)} (Holm-adjusted p < 0.05); they differ both in the images "
               "scored and in the training set's size." if apart else "They agree within noise."))
    if "same_test" not in scores:
        return text + " `python studies/splits.py` scores the validation networks on the test set too."
    effects = {name: stats.paired(differences(scores["same_test"], a, b), differences(scores["same_validation"], a, b))
               for a, b, name in NORM_PAIRS}
    text += (f"\n\nThe same networks scored on both (`studies/splits.py`), the difference on the test set minus "
             f"on the validation split, paired by seed: " + "; ".join(f"{name} {signed_ci(e)}" for name, e in effects.items())
             + ".")
    for a, b, name in NORM_PAIRS:
        if name not in apart:
            continue
        if effects[name]["ci"][0] > 0 or effects[name]["ci"][1] < 0:
            text += f" For {name} the images scored make a difference on the same networks."
        else:
            at_50k = paired_by_seed(scores["same_test"][a], scores["same_test"][b])
            text += (f" For {name} the same networks' difference is {signed_ci(at_50k)} on the test set, and the images "
                     f"scored change it within noise: {n_val} seeds cannot tell whether the images scored or the "
                     "10,000 extra training images make the splits disagree.")
    return text + " " + provenance(read_json(images("splits.json")), "Scored by")


def notebook_repo_url():
    """REPO_URL as set in the notebook's parameters cell (the one place it is written)."""
    notebook = read_json(os.path.join(ROOT, "S6_Normalization.ipynb"))
    for cell in notebook["cells"]:
        if "parameters" in cell["metadata"].get("tags", []):
            match = re.search(r'^REPO_URL = "([^"]*)"', "".join(cell["source"]), re.M)
            return match.group(1) if match else ""
    return ""


def section_colab():
    """The Open-in-Colab link, built from the notebook's REPO_URL."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(\.git)?/?", notebook_repo_url())
    if not match:
        return "Open in Colab: set `REPO_URL` in the notebook's first cell; `python report.py` then makes this the link."
    colab = f"https://colab.research.google.com/github/{match.group(1)}/{match.group(2)}/blob/main/S6_Normalization.ipynb"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})"


SECTIONS = {
    "colab": section_colab,
    "headline": section_headline,
    "comparisons": section_comparisons,
    "batch_size": section_batch_size,
    "batch_size_full": section_batch_size_full,
    "shift": section_shift,
    "shift_table": section_shift_table,
    "shift_full": section_shift_full,
    "notebook": section_notebook,
    "recipe": section_recipe,
    "search": section_search,
    "finalists": section_finalists,
    "validation_table": section_validation_table,
    "speed_txt": lambda: file_block("benchmarks/speed.txt"),
    "speed_gpu_txt": lambda: file_block("benchmarks/speed_gpu.txt"),
    "l1_sweep_txt": lambda: file_block("benchmarks/l1_sweep.txt"),
}
DOCUMENTS = ("README.md", "benchmarks/README.md", "studies/README.md")  # what report.py writes
MAKERS = {  # the command that writes the results a section needs, named when they are missing
    "headline": "python studies/seeds.py", "comparisons": "python studies/seeds.py",
    "batch_size": "python studies/batch_size.py", "batch_size_full": "python studies/batch_size.py",
    "shift": "python studies/shift.py", "shift_table": "python studies/shift.py",
    "shift_full": "python studies/shift.py", "notebook": "make run", "recipe": "make run",
    "search": "python studies/search.py", "finalists": "python studies/seeds.py --candidate NAME",
    "validation_table": "python studies/search.py --rounds 6 && python studies/splits.py",
    "speed_txt": "python benchmarks/speed.py > benchmarks/speed.txt",
    "speed_gpu_txt": "bash benchmarks/gpu.sh (on a GPU; then copy gpu_results/speed_gpu.txt to benchmarks/)",
    "l1_sweep_txt": "python benchmarks/l1_sweep.py > benchmarks/l1_sweep.txt",
}


def section_text(name, sections=None):
    """The generated text of one section; where its results file does not exist yet, a line
    saying so and naming the command that makes it (never numbers from elsewhere)."""
    try:
        return (sections or SECTIONS)[name]().rstrip("\n") + "\n"
    except FileNotFoundError as error:
        missing = os.path.relpath(error.filename, ROOT) if error.filename else "a results file"
        return f"*Not run yet: `{missing}` is missing; `{MAKERS.get(name, 'python report.py')}` makes it.*\n"


# ---------------------------------------------------------------------------------------
# README.md
# ---------------------------------------------------------------------------------------

MARKER = re.compile(r"(<!-- begin: (\S+) -->\n)(.*?)(<!-- end: \2 -->)", re.S)


def render(text, sections=None):
    """`text` with every generated section rewritten; unknown section names raise KeyError."""
    return MARKER.sub(lambda m: m.group(1) + section_text(m.group(2), sections) + m.group(4), text)


def stale_sections(text, sections=None):
    """Names of the generated sections whose text differs from what the results give."""
    return [m.group(2) for m in MARKER.finditer(text) if m.group(3) != section_text(m.group(2), sections)]


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def clean_notebook(path):
    """Strip from an executed notebook what changes on every run without being a result:
    widget state and the progress-bar outputs that point at it, execution timestamps and
    papermill's bookkeeping. Rewrites `path` atomically."""
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    for key in ("widgets", "papermill"):
        notebook["metadata"].pop(key, None)
    for cell in notebook["cells"]:
        for key in ("execution", "papermill"):
            cell["metadata"].pop(key, None)
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if WIDGET_VIEW not in o.get("data", {})]
    atomic_write(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a document is stale")
    parser.add_argument("--clean-notebook", metavar="PATH", help="strip widget state and timestamps from PATH")
    args = parser.parse_args(argv)
    if args.clean_notebook:
        clean_notebook(args.clean_notebook)
        return 0
    stale = {}
    for document in DOCUMENTS:
        path = os.path.join(ROOT, document)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if args.check:
            stale[document] = stale_sections(text)
            continue
        rendered = render(text)
        atomic_write(path, rendered)
        print(f"rewrote {len(MARKER.findall(text))} generated sections of {document}")
    problems = [f"{document} ({', '.join(names)})" for document, names in stale.items() if names]
    if args.check or problems:
        print("stale: " + "; ".join(problems) + ". Run: python report.py" if problems
              else "every generated section agrees with the results files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
