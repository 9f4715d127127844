"""The READMEs' result sections, spliced from the tables and outputs the studies, the notebook and
the benchmarks write; and the notebook cleaner that `make run` uses.

    python report.py           # remake every table from its results, then splice them into the READMEs
    python report.py --check   # exit 1, naming them, if a table or a README disagrees with the results
    python report.py --clean-notebook NOTEBOOK

A section sits between `<!-- begin: PATH -->` and `<!-- end: PATH -->`; PATH is the file spliced
there (a .md as it is, a .txt as a code block), or `recipe` or `colab`, which are made from the
code. Each table is made by the study that owns it, from its own CSV or JSON (make_tables). Nothing is
written unless every table and document renders: a results file that is missing or holds a
non-finite number stops it, naming the file and the command that makes it.
"""

import argparse
import glob
import json
import os
import re
import sys

import utils
from files import ROOT, atomic_write, read_csv, read_json
from studies import adabn, batch_size, seeds, shift

DOCUMENTS = ("README.md", "studies/README.md", "benchmarks/README.md")
IMAGES = os.path.join(ROOT, "Images")
NOTEBOOK = "S6_Normalization.ipynb"


def notebook_tables(folder):
    timing = read_json(os.path.join(folder, "timing.json"), "make run")
    return {"results.md": utils.results_table(read_json(os.path.join(folder, "summary.json"), "make run"),
                                              timing["notebook_seconds"])}


STUDIES = (seeds, batch_size, shift, adabn)
MAKERS = {**{f"Images/tables/{name}": study.MAKER for study in STUDIES for name in study.TABLE_NAMES},
          "Images/notebook/results.md": "make run",
          "benchmarks/speed.txt": "python -m benchmarks.speed > benchmarks/speed.txt",
          "benchmarks/l1_sweep.txt": "git checkout a69d32f && python -m benchmarks.l1_sweep > benchmarks/l1_sweep.txt",
          "benchmarks/inference.txt": "python -m benchmarks.inference > benchmarks/inference.txt",
          "benchmarks/make_run.txt": "time make run, in fresh clones (see benchmarks/README.md)",
          "benchmarks/grouped_cpu.txt": "git checkout a69d32f && OMP_NUM_THREADS=1 python -m benchmarks.gpu "
                                        "--step-times B > benchmarks/grouped_cpu.txt",
          "benchmarks/speed_gpu.txt": "bash benchmarks/gpu.sh (on a GPU machine)"}
FIGURES = {"Images/batch_size.png": ("test error against images per normalization batch", batch_size.MAKER),
           "Images/adabn.png": ("AdaBN accuracy against the number of target images", adabn.MAKER)}  # shown once drawn
MAKERS.update({path: maker for path, (_, maker) in FIGURES.items()})


def make_tables(images=IMAGES):
    """{path of a table: its Markdown, made afresh from its results in `images`} (none for a study not
    run yet). Raises ValueError naming a results file that is missing or cannot be used."""
    made = {}
    makers = [(study.RESULTS, "tables", study.tables, study.MAKER) for study in STUDIES]
    makers.append(("notebook/summary.json", "notebook",
                   lambda folder: notebook_tables(os.path.join(folder, "notebook")), "make run"))
    for results, folder, make, maker in makers:
        if not os.path.exists(os.path.join(images, results)):
            continue
        try:
            made.update({f"Images/{folder}/{name}": text for name, text in make(images).items()})
        except FileNotFoundError as error:
            raise ValueError(f"{error.filename} is missing: `{maker}` writes it") from None
    for pattern in ("Images/**/*.csv", "Images/**/*.json", "studies/*.csv", "studies/*.json"):
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            (read_csv if path.endswith(".csv") else read_json)(path)  # finite numbers only, everywhere
    return made


def colab():
    """The Open-in-Colab badge, from REPO_URL in the notebook's parameters cell."""
    cells = read_json(os.path.join(ROOT, NOTEBOOK))["cells"]
    cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    match = re.search(r'^REPO_URL = "https://github\.com/([^/"]+)/([^/"]+?)(\.git)?/?"', "".join(cell["source"]), re.M)
    if not match:
        return ("Open in Colab: set `REPO_URL` in the notebook's parameters cell to this repository's URL (the "
                "notebook clones it); `python report.py` then links it here.\n")
    url = f"https://colab.research.google.com/github/{match.group(1)}/{match.group(2)}/blob/main/{NOTEBOOK}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})\n"


def read_text(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


SECTIONS = {"recipe": utils.recipe_markdown, "colab": lambda up: colab()}  # up: to the root
MARKER = re.compile(r"(<!-- begin: (\S+) -->\n)(.*?)(<!-- end: \2 -->)", re.S)


def section(name, tables, document="README.md"):
    """The text of one section of `document`: made from the code, a table, a figure (linked from the
    document's folder), or a file spliced as it is."""
    up = "../" * document.count("/")  # from the document's folder to the root
    if name in SECTIONS:
        return SECTIONS[name](up)
    path, _, part = name.partition("#")  # PATH#last: the file's last line only
    if path not in tables and not os.path.exists(os.path.join(ROOT, path)):
        return f"*Not run yet: `{MAKERS.get(path, 'python report.py')}` makes `{path}`.*\n"
    if path in FIGURES:
        return f"![{FIGURES[path][0]}]({up}{path})\n"
    if path in tables:
        return tables[path]
    text = read_text(path)
    if part == "last":
        return f"`{path}`, its last line: {text.rstrip().splitlines()[-1]}\n"
    return f"`{path}`:\n\n```\n{text.rstrip()}\n```\n" if path.endswith(".txt") else text


def render(text, tables, document="README.md"):
    """`text` (of `document`) with every section rewritten."""
    return MARKER.sub(lambda m: m.group(1) + section(m.group(2), tables, document) + m.group(4), text)


def stale(tables, documents=None):
    """[what disagrees with the results]: tables whose file differs from what their results give,
    and documents with a section that does; `documents`: rendered_documents(tables), if at hand."""
    found = [path for path, text in tables.items()
             if not os.path.exists(os.path.join(ROOT, path)) or read_text(path) != text]
    for document, rendered in (documents or rendered_documents(tables)).items():
        fresh = {m.group(2): m.group(3) for m in MARKER.finditer(rendered)}
        names = [m.group(2) for m in MARKER.finditer(read_text(document)) if m.group(3) != fresh[m.group(2)]]
        found += [f"{document} ({', '.join(names)})"] if names else []
    return found


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def clean_notebook(path):
    """Strip from an executed notebook what changes on every run without being a result: widget
    state and the progress bars that point at it, timestamps, papermill's bookkeeping and the
    parameters cell it injects (make run injects only where the results go). Rewrites `path`."""
    notebook = read_json(path)
    for key in ("widgets", "papermill"):
        notebook["metadata"].pop(key, None)
    notebook["cells"] = [c for c in notebook["cells"] if "injected-parameters" not in c["metadata"].get("tags", [])]
    for cell in notebook["cells"]:
        for key in ("execution", "papermill"):
            cell["metadata"].pop(key, None)
        if "outputs" in cell:
            cell["outputs"] = [o for o in cell["outputs"] if WIDGET_VIEW not in o.get("data", {})]
    atomic_write(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def rendered_documents(tables):
    """{document: its text with every section rewritten}."""
    return {document: render(read_text(document), tables, document) for document in DOCUMENTS}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a table or document is stale")
    parser.add_argument("--clean-notebook", metavar="PATH", help="strip widget state and timestamps from PATH")
    args = parser.parse_args(argv)
    if args.clean_notebook:
        clean_notebook(args.clean_notebook)
        return 0
    try:
        tables = make_tables()
        documents = rendered_documents(tables)  # every document renders before any is written
    except ValueError as error:
        print(f"report.py: nothing written: {error}", file=sys.stderr)
        return 1
    if args.check:
        problems = stale(tables, documents)
        print("stale: " + "; ".join(problems) + ". Run: python report.py" if problems
              else "every table and generated section agrees with the results files")
        return 1 if problems else 0
    for path, text in {**tables, **documents}.items():
        atomic_write(os.path.join(ROOT, path), text)
    print(f"wrote {len(tables)} tables and {len(documents)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
