"""The notebook end to end with tiny parameters (real MNIST, fetched if missing)."""

import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = ["test_loss.png", "test_accuracy.png", "history.csv", "summary.json", "misclassified.json",
            *(f"{kind}_{norm}.{ext}" for norm in "BLG"
              for kind, ext in (("misclassified", "png"), ("curves", "png"), ("summary", "txt")))]


@pytest.mark.integration
def test_notebook_runs_end_to_end_and_writes_every_file(tmp_path):
    papermill = pytest.importorskip("papermill")
    images = tmp_path / "images"
    papermill.execute_notebook(
        os.path.join(ROOT, "S6_Normalization.ipynb"), str(tmp_path / "out.ipynb"), cwd=ROOT,
        parameters=dict(EPOCHS=1, SEEDS=[1], TRAIN_LIMIT=2000, TEST_LIMIT=1000, DEVICE="cpu",
                        IMAGES_DIR=str(images)),
        progress_bar=False, kernel_name="python3")

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
