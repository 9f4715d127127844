"""benchmarks/speed.py on tiny data: its timing functions run against the current utils API and
its arguments are checked. (Times are printed by the benchmark, never asserted here.)"""

import importlib.util
import os
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed", os.path.join(ROOT, "benchmarks", "speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("norm, bf16", [("B", False), ("L", True)])
def test_network_epoch_trains_the_network_on_tiny_data(make_data, speed, norm, bf16):
    seconds = speed.network_epoch(norm, make_data(), batch_size=32, bf16=bf16)
    assert isinstance(seconds, float) and seconds > 0


@pytest.mark.parametrize("argv", [["--repeats", "0"], ["--ceiling-batch-sizes", "128", "0"]])
def test_non_positive_counts_are_rejected_before_any_work(speed, monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", ["speed.py", *argv])
    with pytest.raises(SystemExit) as error:
        speed.main()
    assert error.value.code == 2
    assert "positive integers" in capsys.readouterr().err


def test_profile_table_lists_the_operators_of_training_batches(make_data, speed):
    table = speed.profile_table("G", make_data(n_train=32 * 50), rows=5)
    assert "Self CPU time total" in table and "aten::" in table


def test_gpu_report_without_a_gpu_says_so(speed, monkeypatch):
    monkeypatch.setattr(speed.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["speed.py", "--gpu"])
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        speed.main()


@pytest.mark.integration
@pytest.mark.parametrize("ipython", [True, False], ids=["with IPython", "bare machine"])
def test_notebook_seconds_runs_the_notebook_in_process(speed, tmp_path, monkeypatch, ipython):
    if not ipython:  # as on a lent GPU machine: importing IPython fails, and find_spec does not find it
        real = importlib.util.find_spec
        monkeypatch.setitem(sys.modules, "IPython", None)
        monkeypatch.setitem(sys.modules, "IPython.display", None)
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "IPython" else real(name, *a))
    images = tmp_path / "images"
    seconds = speed.notebook_seconds(EPOCHS=1, SEEDS=[1], TRAIN_LIMIT=2000, TEST_LIMIT=1000, DEVICE="cpu",
                                     IMAGES_DIR=str(images))
    assert seconds > 0 and (images / "summary.json").exists() and (images / "net_G.pt").exists()
