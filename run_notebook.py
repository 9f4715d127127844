"""What `make run` does: the notebook top to bottom, then its results published with it, all at once.

    python run_notebook.py                   # make run
    python run_notebook.py -p EPOCHS 1 -p TRAIN_LIMIT 2000   # notebook parameters (values as Python literals)

One at a time: a second call while one runs says so and changes nothing (a lock on .make-run.lock,
released however the first ends). The notebook runs with papermill into a fresh folder of its own; only
once every cell has run do the executed notebook (cleaned, papermill's injected parameters cell
stripped), Images/notebook/, the tables and the READMEs change together, in a few renames with SIGINT
and SIGTERM held back. An interruption before then leaves the previous set as it was; a bad results
file stops it before anything trains.
"""

import argparse
import ast
import glob
import os
import shutil
import signal
import sys
import tempfile

import papermill

import report
import utils
from files import ROOT, atomic_write, check_replaceable, exclusive, publish_folder, signals_deferred

NOTEBOOK = os.path.join(ROOT, report.NOTEBOOK)
IMAGES = os.path.join(ROOT, "Images", "notebook")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter, e.g. -p EPOCHS 1 (the value is read as a Python literal)")
    args = parser.parse_args(argv)
    parameters = {}
    for name, value in args.p:
        try:
            parameters[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parameters[name] = value  # a plain string, as papermill's -p reads it
    if "IMAGES_DIR" in parameters:
        parser.error("make run publishes into Images/notebook/; to write elsewhere, run the notebook itself "
                     "(papermill S6_Normalization.ipynb out.ipynb -p IMAGES_DIR folder)")
    try:
        with exclusive(os.path.join(ROOT, ".make-run.lock"), "`make run`"):
            check_replaceable(IMAGES, utils.NOTEBOOK_FILES, "the notebook")
            for leftover in glob.glob(os.path.join(ROOT, ".make-run-*")):  # under the lock: an interrupted run's
                shutil.rmtree(leftover, ignore_errors=True)
            report.make_tables()  # a bad results file stops it here, before anything trains
            return run(parameters)
    except (RuntimeError, ValueError) as error:
        print(f"make run: {error}; nothing changed", file=sys.stderr)
        return 1


def run(parameters):
    work = tempfile.mkdtemp(prefix=".make-run-", dir=ROOT)
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))  # so that `finally` removes it
    try:
        executed, images = os.path.join(work, report.NOTEBOOK), os.path.join(work, "notebook")
        papermill.execute_notebook(NOTEBOOK, executed, cwd=ROOT, progress_bar=False, kernel_name="python3",
                                   parameters={**parameters, "IMAGES_DIR": images})
        report.clean_notebook(executed)
        tables = {path: text for path, text in report.make_tables().items() if not path.startswith("Images/notebook/")}
        documents = report.rendered_documents({**tables, **{f"Images/notebook/{name}": text for name, text in
                                                            report.notebook_tables(images).items()}})
        with signals_deferred() as interrupted:
            publish_folder(images, IMAGES)
            os.replace(executed, NOTEBOOK)
            for path, text in {**tables, **documents}.items():
                atomic_write(os.path.join(ROOT, path), text)
        print(f"published {report.NOTEBOOK}, Images/notebook/ and the READMEs"
              + ("; interrupted after publishing" if interrupted else ""))
        return 128 + interrupted[0] if interrupted else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
