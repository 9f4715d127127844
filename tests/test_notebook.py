"""The notebook end to end with tiny parameters (real MNIST, fetched if missing), and `make run`'s
driver: one at a time, and an interruption never leaves the notebook, its folder and the README
out of step."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "S6_Normalization.ipynb")
DATA = os.path.join(ROOT, "data")
TINY = dict(EPOCHS=1, SEEDS=[1], TRAIN_LIMIT=2000, TEST_LIMIT=1000, DEVICE="cpu")


def execute(path, output, cwd, **parameters):
    import papermill

    return papermill.execute_notebook(path, str(output), cwd=cwd, parameters=parameters, progress_bar=False,
                                      kernel_name="python3")


@pytest.mark.integration
def test_notebook_runs_end_to_end_and_writes_every_file(tmp_path):
    images = tmp_path / "images"
    execute(NOTEBOOK, tmp_path / "out.ipynb", ROOT, IMAGES_DIR=str(images), RUNS_DIR=str(tmp_path / "runs"),
            DATA_DIR=DATA, **TINY)
    assert set(os.listdir(images)) == utils.NOTEBOOK_FILES
    mistakes = json.loads((images / "misclassified.json").read_text())
    assert set(mistakes) == {"B", "L", "G"}
    for entries in mistakes.values():
        assert len(entries) == 10
        assert all(0 <= e["index"] < 1000 and e["predicted"] != e["actual"] for e in entries)
    summary = json.loads((images / "summary.json").read_text())
    assert all(summary[n]["epochs"] == 1 and summary[n]["params"] < 8000 for n in "BLG")
    assert summary["run"]["parameters"]["train_limit"] == 2000
    assert (images / "test_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    from model import Net

    for norm in "BLG":  # the saved networks load as Net.pretrained loads the committed ones
        net = Net.pretrained(norm, path=str(images / f"net_{norm}.pt"))
        assert net.info["test_accuracy"] == summary[norm]["final_test_accuracy"] and not net.training


@pytest.mark.integration
def test_notebook_opened_alone_clones_the_repository_from_repo_url(tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(NOTEBOOK, alone)  # nothing else: no model.py, no utils.py
    images = tmp_path / "images"
    execute(str(alone / "S6_Normalization.ipynb"), tmp_path / "out.ipynb", str(alone), REPO_URL=ROOT, DATA_DIR=DATA,
            IMAGES_DIR=str(images), RUNS_DIR=str(tmp_path / "runs"), **TINY)
    clone = alone / os.path.basename(ROOT)
    assert (clone / "model.py").exists() and (clone / ".git").exists()
    assert set(os.listdir(images)) == utils.NOTEBOOK_FILES


@pytest.mark.integration
def test_a_notebook_killed_mid_run_leaves_the_previous_complete_set(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    previous = {"summary.json": "{}", "test_loss.png": "previous run"}
    for name, text in previous.items():
        (images / name).write_text(text)
    arguments = [f"-p {k} {v}" for k, v in dict(IMAGES_DIR=images, RUNS_DIR=tmp_path / "runs", EPOCHS=3,
                                                   TRAIN_LIMIT=6000, TEST_LIMIT=1000, DEVICE="cpu", DATA_DIR=DATA).items()]
    process = subprocess.Popen(
        [sys.executable, "-m", "papermill", "--no-progress-bar", NOTEBOOK, str(tmp_path / "out.ipynb"),
         *" ".join(arguments).split()], cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    staging = lambda: [p for p in tmp_path.iterdir() if ".staging-" in p.name]  # noqa: E731
    while time.time() < deadline and not (staging() and any(staging()[0].iterdir())):
        time.sleep(0.1)
    time.sleep(2)  # into the training
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert {p.name: p.read_text() for p in images.iterdir()} == previous


def copy_of_the_repository(tmp_path):
    """The code, documents and results of this checkout, without git, data or runs."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "data", "runs", "__pycache__", ".make-run*",
                                                              ".pytest_cache"))
    return copy


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.integration
def test_a_folder_of_the_studies_results_is_refused_and_left_byte_identical(tmp_path):
    import papermill

    copy = copy_of_the_repository(tmp_path)
    before = snapshot(copy / "Images")
    with pytest.raises(papermill.PapermillExecutionError, match=r"Images holds files that the notebook did not write"):
        execute(str(copy / "S6_Normalization.ipynb"), tmp_path / "out.ipynb", str(copy), IMAGES_DIR="Images",
                RUNS_DIR=str(tmp_path / "runs"), DATA_DIR=DATA, **TINY)
    with pytest.raises(papermill.PapermillExecutionError, match=r"RUNS_DIR|results_dir='Images'.*holds files"):
        execute(str(copy / "S6_Normalization.ipynb"), tmp_path / "out.ipynb", str(copy), RUNS_DIR="Images",
                IMAGES_DIR=str(tmp_path / "images"), DATA_DIR=DATA, **TINY)
    assert snapshot(copy / "Images") == before


def driver(copy, runs, *extra):
    """`make run`'s driver in a copy of the repository, with tiny parameters."""
    parameters = dict(TINY, SEEDS="[1]", DATA_DIR=repr(DATA), RUNS_DIR=repr(str(runs)), DEVICE="'cpu'")
    arguments = [item for name, value in parameters.items() for item in ("-p", name, str(value))]
    return subprocess.Popen([sys.executable, "run_notebook.py", *arguments, *extra], cwd=copy, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def consistent(copy):
    """The notebook, Images/notebook/ and the README's notebook section show the same run."""
    sys.path.insert(0, str(copy))
    summary = json.loads((copy / "Images" / "notebook" / "summary.json").read_text())
    results = (copy / "Images" / "notebook" / "results.md").read_text()
    readme = (copy / "README.md").read_text()
    notebook = json.loads((copy / "S6_Normalization.ipynb").read_text())
    shown = ["".join(o["data"]["text/markdown"]) for c in notebook["cells"] for o in c.get("outputs", [])
             if "text/markdown" in o.get("data", {})]
    return (set(os.listdir(copy / "Images" / "notebook")) == utils.NOTEBOOK_FILES
            and f"<!-- begin: Images/notebook/results.md -->\n{results}<!-- end: Images/notebook/results.md -->" in readme
            and utils.results_table(summary) in shown)


@pytest.mark.integration
def test_make_run_one_at_a_time_publishes_one_complete_set(tmp_path):
    copy = copy_of_the_repository(tmp_path)
    first = driver(copy, tmp_path / "runs")
    deadline = time.time() + 60
    while time.time() < deadline and not (copy / ".make-run.lock").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    second = driver(copy, tmp_path / "runs2")
    _, error = second.communicate(timeout=60)
    assert second.returncode == 1 and f"another `make run` is in progress (pid {first.pid})" in error
    assert "nothing changed" in error
    first.communicate(timeout=300)
    assert first.returncode == 0 and consistent(copy)
    summary = json.loads((copy / "Images" / "notebook" / "summary.json").read_text())
    assert summary["B"]["epochs"] == 1  # the new set, not the committed one


@pytest.mark.integration
@pytest.mark.parametrize("moment", ["while the notebook runs", "once the notebook has published its folder"])
def test_an_interrupted_make_run_leaves_the_previous_set_or_the_new_one(tmp_path, moment):
    copy = copy_of_the_repository(tmp_path)
    before = snapshot(copy)
    process = driver(copy, tmp_path / "runs")
    deadline = time.time() + 300

    def work():
        return [p for p in copy.iterdir() if p.name.startswith(".make-run-")]

    if moment == "while the notebook runs":
        while time.time() < deadline and not (work() and (tmp_path / "runs").exists()):
            time.sleep(0.05)
        time.sleep(1)
    else:
        while time.time() < deadline and not (work() and (work()[0] / "notebook").is_dir()):
            time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the driver, the kernel and the sweep's workers
    process.communicate(timeout=120)
    after = snapshot(copy)
    changed = {path for path in set(before) | set(after) if before.get(path) != after.get(path)}
    assert changed <= {*(f"Images/notebook/{name}" for name in utils.NOTEBOOK_FILES), "S6_Normalization.ipynb",
                       "README.md", ".make-run.lock"}, changed
    assert consistent(copy)  # the previous set (nothing changed) or the new one, whole
    assert not work()
