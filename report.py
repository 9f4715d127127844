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
import math
import os
import platform
import re
import subprocess
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
NORM_ORDER = ("B", "L", "G")


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
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "*.py"):
        commit += " (with uncommitted changes to .py files)"
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "parameters": parameters,
        "git_commit": commit,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
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
    with open(path) as f:
        return json.load(f)


def notebook_table(images_dir, how="`make run`"):
    """The notebook run: one row per variant from its summary.json."""
    summary = read_json(os.path.join(images_dir, "summary.json"))
    rows = []
    for norm in (n for n in NORM_ORDER if n in summary):
        s = summary[norm]
        seeds = ", ".join(str(seed) for seed in s["seeds"])
        spread = f" ± {s['final_test_accuracy_std']:.2f}" if len(s["seeds"]) > 1 else ""
        rows.append([s["name"], f"{s['params']:,}", seeds, f"{s['final_test_accuracy']:.2f}%{spread}",
                     f"{s['final_test_loss']:.4f}", f"{s['seconds']:.0f} s"])
    run = summary["run"]
    table = markdown_table(["variant", "params", "seed", "final test accuracy", "final test loss",
                            "training time"], rows)
    epochs = max(summary[n]["epochs"] for n in NORM_ORDER if n in summary)
    return (f"{table}\n\nFinal = the last epoch ({epochs}), never the "
            f"best one. Produced by {how} at commit `{run['git_commit'][:7]}` on {run['device']} "
            f"(torch {run['torch']}, {run['threads']} threads).")


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
    shared = set.intersection(*({m["index"] for m in mistakes[n]} for n in norms))
    bullets = [
        "**Final-epoch test accuracy**: " + ", ".join(f"{name[n]} **{final[n]:.2f}%**" for n in ranked)
        + f"; {final[ranked[0]] - final[ranked[-1]]:.2f} points from first to last.",
        "**After one epoch**: " + ", ".join(f"{name[n]} {first[n]['test_accuracy'][0]:.2f}%" for n in norms) + ".",
        f"**Noise**: in the second half of training the test accuracy moves by up to "
        f"{later[swing_norm].max() if len(later[swing_norm]) else 0:.2f} points from one epoch to the next "
        f"({name[swing_norm]}), so one seed's final differences do not rank the norms; the README's "
        "study over many seeds does.",
        f"**Train against test**: at the last epoch the training accuracy on augmented batches is within "
        f"{max(gaps):.2f} points of the test accuracy for every variant.",
        f"**Shared mistakes**: {len(shared)} test image(s) "
        + (f"({', '.join(f'#{i}' for i in sorted(shared))}) " if shared else "")
        + "are among the 10 most confident mistakes of all three models.",
    ]
    return "\n".join(f"- {b}" for b in bullets)


def section_notebook():
    return notebook_table(os.path.join(ROOT, "Images"))


def section_seeds():
    return notebook_table(os.path.join(ROOT, "Images", "seeds"), how="the notebook with `SEEDS = [1, 2, 3]`")


def file_block(path):
    """A results file shown whole, as a code block (lab notes quote their outputs this way)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f"`{path}`:\n\n```\n{f.read().rstrip()}\n```"


SECTIONS = {
    "notebook": section_notebook,
    "seeds": section_seeds,
    "speed_txt": lambda: file_block("benchmarks/speed.txt"),
    "l1_sweep_txt": lambda: file_block("benchmarks/l1_sweep.txt"),
}
DOCUMENTS = ("README.md", "benchmarks/README.md")  # the files whose generated sections report.py writes


# ---------------------------------------------------------------------------------------
# README.md
# ---------------------------------------------------------------------------------------

MARKER = re.compile(r"(<!-- begin: (\S+) -->\n)(.*?)(<!-- end: \2 -->)", re.S)


def render(text, sections=None):
    """`text` with every generated section rewritten; unknown section names raise KeyError."""
    sections = sections or SECTIONS
    return MARKER.sub(lambda m: m.group(1) + sections[m.group(2)]().rstrip("\n") + "\n" + m.group(4), text)


def stale_sections(text, sections=None):
    """Names of the generated sections whose text differs from what the results give."""
    sections = sections or SECTIONS
    return [m.group(2) for m in MARKER.finditer(text)
            if m.group(3) != sections[m.group(2)]().rstrip("\n") + "\n"]


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def clean_notebook(path):
    """Strip from an executed notebook what changes on every run without being a result:
    widget state and the progress-bar outputs that point at it, execution timestamps and
    papermill's bookkeeping. Rewrites `path` atomically."""
    from data import atomic_write

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
        with open(path, "w", encoding="utf-8") as f:
            f.write(render(text))
        print(f"rewrote {len(MARKER.findall(text))} generated sections of {document}")
    problems = [f"{document} ({', '.join(names)})" for document, names in stale.items() if names]
    if args.check:
        print("stale: " + "; ".join(problems) + ". Run: python report.py" if problems
              else "every generated section agrees with the results files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
