"""The notebook end to end with tiny parameters (real MNIST, fetched if missing)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "S6_Normalization.ipynb")
TINY = dict(EPOCHS=1, SEEDS=[1], TRAIN_LIMIT=2000, TEST_LIMIT=1000, DEVICE="cpu")
EXPECTED = ["test_loss.png", "test_accuracy.png", "history.csv", "summary.json", "misclassified.json", "timing.json",
            *(f"{kind}_{norm}.{ext}" for norm in "BLG"
              for kind, ext in (("misclassified", "png"), ("curves", "png"), ("summary", "txt"), ("net", "pt")))]


def execute(path, output, cwd, **parameters):
    import papermill

    return papermill.execute_notebook(path, str(output), cwd=cwd, parameters=parameters, progress_bar=False,
                                      kernel_name="python3")


@pytest.mark.integration
def test_notebook_runs_end_to_end_and_writes_every_file(tmp_path):
    pytest.importorskip("papermill")
    images = tmp_path / "images"
    execute(NOTEBOOK, tmp_path / "out.ipynb", ROOT, IMAGES_DIR=str(images), RUNS_DIR=str(tmp_path / "runs"),
            DATA_DIR=os.path.join(ROOT, "data"), **TINY)

    assert sorted(os.listdir(images)) == sorted(EXPECTED)
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
    sys.path.insert(0, ROOT)
    from model import Net

    for norm in "BLG":  # the saved networks load as Net.pretrained loads the committed ones
        net = Net.pretrained(norm, path=str(images / f"net_{norm}.pt"))
        assert net.info["test_accuracy"] == summary[norm]["final_test_accuracy"] and not net.training


@pytest.mark.integration
def test_notebook_opened_alone_clones_the_repository_from_repo_url(tmp_path):
    pytest.importorskip("papermill")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(NOTEBOOK, alone)  # nothing else: no model.py, no utils.py
    images = tmp_path / "images"
    execute(str(alone / "S6_Normalization.ipynb"), tmp_path / "out.ipynb", str(alone), REPO_URL=ROOT,
            DATA_DIR=os.path.join(ROOT, "data"),
            IMAGES_DIR=str(images), RUNS_DIR=str(tmp_path / "runs"), **TINY)
    clone = alone / os.path.basename(ROOT)
    assert (clone / "model.py").exists() and (clone / ".git").exists()
    assert sorted(os.listdir(images)) == sorted(EXPECTED)


@pytest.mark.integration
def test_a_notebook_killed_mid_run_leaves_the_previous_complete_set(tmp_path):
    pytest.importorskip("papermill")
    images = tmp_path / "images"
    images.mkdir()
    previous = {"summary.json": "{}", "test_loss.png": "previous run"}
    for name, text in previous.items():
        (images / name).write_text(text)
    arguments = [f"-p {k} {v}" for k, v in dict(IMAGES_DIR=images, RUNS_DIR=tmp_path / "runs", EPOCHS=3,
                                                   TRAIN_LIMIT=6000, TEST_LIMIT=1000, DEVICE="cpu",
                                                   DATA_DIR=os.path.join(ROOT, "data")).items()]
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
