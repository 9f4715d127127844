"""Faults and mistakes get a message naming what is wrong, and nothing is lost or half-written."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import data
import files
import report
import sweeps
import utils
from model import Net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(batch_size=32, eval_batch_size=16, progress=False)


def with_nan_image(make_data, index=5):
    tensors = list(make_data())
    tensors[0] = tensors[0].clone()
    tensors[0][index, 0, 3, 3] = float("nan")
    return tensors


def test_a_nan_image_is_refused_before_training_and_nothing_is_written(make_data, tmp_path):
    with pytest.raises(ValueError, match=r"train_x holds 1 image.*NaN.*\[5\]"):
        utils.run("B", epochs=1, data=with_nan_image(make_data), **TINY)
    with pytest.raises(ValueError, match=r"train_x holds 1 image.*NaN"):
        sweeps.sweep([dict(norm="L")], workers=1, results_dir=str(tmp_path), epochs=1, data=with_nan_image(make_data),
                    device="cpu", progress=False)
    assert not list(tmp_path.glob("*.pt"))


def test_a_diverging_run_stops_naming_variant_seed_and_epoch(make_data):
    with pytest.raises(utils.TrainingDiverged, match=r"BatchNorm \+ L1.*seed 3.*epoch 1.*max_lr"):
        utils.run("B", epochs=2, seed=3, data=make_data(), max_lr=10.0, **TINY)


def test_a_non_finite_loss_stops_training_naming_the_step(make_data, monkeypatch):
    calls = []
    training_loss = utils.training_loss

    def nan_at_third_step(model, log_probs, labels, *args):
        calls.append(1)
        objective, loss = training_loss(model, log_probs, labels, *args)
        return (objective * float("nan"), loss * float("nan")) if len(calls) == 3 else (objective, loss)

    monkeypatch.setattr(utils, "training_loss", nan_at_third_step)
    with pytest.raises(utils.TrainingDiverged, match=r"LayerNorm, seed 1.*NaN or infinite at epoch 1, step 3 of 3"):
        utils.run("L", epochs=2, data=make_data(), **TINY)


def test_a_sweep_keeps_the_runs_that_finished_when_one_diverges(make_data, tmp_path):
    runs = [dict(norm="B", max_lr=10.0), dict(norm="G")]
    with pytest.raises(RuntimeError, match=r"(?s)1 of 2 runs failed.*BatchNorm.*TrainingDiverged"):
        sweeps.sweep(runs, workers=2, threads=1, results_dir=str(tmp_path), epochs=1, batch_size=32,
                    data=make_data(), device="cpu", progress=False)
    assert [p.name.split("-")[0] for p in tmp_path.glob("*.pt")] == ["G"]


def test_results_are_strict_json_or_nothing_is_written(tmp_path):
    history = {key: [1.0] for key in utils.HISTORY_KEYS}
    history["test_loss"] = [float("nan")]
    with pytest.raises(ValueError):
        utils.save_results({"B": {1: history}}, {"B": utils.RunConfig()}, {"B": 7850}, str(tmp_path), {})
    assert os.listdir(tmp_path) == []


def test_planted_processed_files_are_never_loaded(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setattr(data, "MNIST_SOURCES", [("fake", lambda raw: [files.atomic_write(os.path.join(raw, n), c)
                                                                      for n, c in tiny_mnist.items()])])
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir(parents=True)
    planted = (torch.zeros(5, 28, 28, dtype=torch.uint8), torch.full((5,), 7))
    for name in ("training.pt", "test.pt"):
        torch.save(planted, processed / name)
    train_x, train_y, _, _ = utils.load_tensors(str(tmp_path))
    assert torch.equal(train_y, data.parse_idx(tiny_mnist["train-labels-idx1-ubyte"]).long())
    assert train_x.std() > 0


def test_a_folder_in_place_of_a_raw_file_is_named(tmp_path, tiny_mnist):
    raw = tmp_path / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="t10k-images-idx3-ubyte.*not a regular file.*move it away"):
        data.load_raw(str(tmp_path))


def test_publish_folder_replaces_a_set_whole_and_recovers_an_interrupted_swap(tmp_path, monkeypatch):
    final = tmp_path / "set"
    final.mkdir()
    (final / "a.txt").write_text("old")
    staging = files.staging_folder(str(final))
    dead, alive = f".set.staging-{2 ** 22 + 12345}-x", f".set.staging-{os.getpid()}-y"
    (tmp_path / dead).mkdir()  # left by a killed run: cleaned next time
    (tmp_path / alive).mkdir()  # another run's, still going: left alone
    assert os.path.dirname(staging) == str(tmp_path)
    (open(os.path.join(staging, "b.txt"), "w")).write("new")
    files.publish_folder(staging, str(final))
    assert sorted(os.listdir(final)) == ["b.txt"] and set(os.listdir(tmp_path)) == {dead, alive, "set"}
    files.staging_folder(str(final))
    assert dead not in os.listdir(tmp_path) and alive in os.listdir(tmp_path)

    # Without an atomic exchange, interrupted between its two renames: the next call repairs it.
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    staging = files.staging_folder(str(final))
    renames = []
    real_rename = os.rename

    def rename_then_die(src, dst):
        renames.append(src)
        if len(renames) == 2:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        files.publish_folder(staging, str(final))
    monkeypatch.setattr(os, "rename", real_rename)
    assert not final.exists() and (tmp_path / "set.previous" / "b.txt").exists()
    files.staging_folder(str(final))  # the next run starts
    assert sorted(os.listdir(final)) == ["b.txt"]  # the previous complete set is back


def test_clean_notebook_strips_widgets_and_timestamps(tmp_path):
    notebook = {"metadata": {"widgets": {"state": {}}, "papermill": {"duration": 3}, "kernelspec": {"name": "python3"}},
                "nbformat": 4, "nbformat_minor": 5,
                "cells": [{"cell_type": "code", "metadata": {"execution": {"iopub.status.busy": "2026"}, "tags": []},
                           "outputs": [{"output_type": "display_data", "data": {report.WIDGET_VIEW: {}, "text/plain": "0/20"}},
                                       {"output_type": "stream", "name": "stdout", "text": "kept"}],
                           "source": "", "execution_count": 1}]}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(notebook))
    report.clean_notebook(str(path))
    cleaned = json.loads(path.read_text())
    assert cleaned["metadata"] == {"kernelspec": {"name": "python3"}}
    assert cleaned["cells"][0]["metadata"] == {"tags": []}
    assert [o.get("text") for o in cleaned["cells"][0]["outputs"]] == ["kept"]


def test_the_committed_notebook_has_no_widget_state_or_timestamps():
    with open(os.path.join(ROOT, "S6_Normalization.ipynb"), encoding="utf-8") as f:
        notebook = json.load(f)
    assert "widgets" not in notebook["metadata"] and "papermill" not in notebook["metadata"]
    for cell in notebook["cells"]:
        assert "execution" not in cell["metadata"] and "papermill" not in cell["metadata"]
        assert not [o for o in cell.get("outputs", []) if report.WIDGET_VIEW in o.get("data", {})]


def test_pretrained_round_trip_and_mismatches_are_named(tmp_path):
    net = Net("G", groups=7)
    path = str(tmp_path / "net_G.pt")
    net.save_pretrained(path, test_accuracy=99.5)
    loaded = Net.pretrained("G", path=path)
    assert loaded.info["test_accuracy"] == 99.5 and loaded.groups == 7 and not loaded.training
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(loaded(x), net.eval()(x))
    with pytest.raises(ValueError, match="holds the weights of norm 'G', not 'B'"):
        Net.pretrained("B", path=path)
    saved = torch.load(path, weights_only=True)
    saved["state_dict"]["head.bias"] = torch.zeros(11)
    saved["sha256"] = sweeps.state_digest(saved["state_dict"])
    torch.save(saved, path)
    with pytest.raises(ValueError, match="does not fit Net"):
        Net.pretrained("G", path=path)
    with pytest.raises(FileNotFoundError, match="make run"):
        Net.pretrained("G", path=str(tmp_path / "missing.pt"))


def flip_one_bit(path):
    """Flip an exponent bit of one weight in a saved network, leaving the file loadable."""
    saved = torch.load(path, weights_only=True)
    weight = next(v for v in saved["state_dict"].values() if v.dim() == 4)
    weight.view(torch.int32).view(-1)[0] ^= 1 << 29
    torch.save(saved, path)


@pytest.mark.parametrize("norm", ["B", "L", "G"])
def test_a_flipped_bit_in_a_committed_network_is_refused_naming_the_file_and_the_fix(tmp_path, norm):
    path = tmp_path / f"net_{norm}.pt"
    shutil.copy(os.path.join(ROOT, "Images", "notebook", f"net_{norm}.pt"), path)
    assert Net.pretrained(norm, path=str(path)).info["test_accuracy"] > 99  # intact, it loads
    flip_one_bit(path)
    with pytest.raises(ValueError, match=rf"net_{norm}.pt: the weights do not match their sha256.*git checkout.*make run"):
        Net.pretrained(norm, path=str(path))
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match=rf"net_{norm}.pt cannot be read.*git checkout"):
        Net.pretrained(norm, path=str(path))


def test_non_finite_weights_are_refused_even_with_a_matching_hash(tmp_path):
    net = Net("B")
    with torch.no_grad():
        net.head.bias[0] = float("inf")
    net.save_pretrained(str(tmp_path / "net_B.pt"))
    with pytest.raises(ValueError, match="non-finite weights in head.bias"):
        Net.pretrained("B", path=str(tmp_path / "net_B.pt"))


def copy_of_the_repository(tmp_path):
    """The code, documents and results of this checkout, without git, data or runs."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "data", "runs", "__pycache__", ".make-run*"))
    return copy


def replace_cell(csv_text, column, value):
    """csv_text with the first row's `column` set to `value`."""
    lines = csv_text.splitlines(keepends=True)
    cells = lines[1].rstrip("\n").split(",")
    cells[lines[0].rstrip("\n").split(",").index(column)] = value
    return lines[0] + ",".join(cells) + "\n" + "".join(lines[2:])


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where, damage", [
    ("Images/summary.json", lambda text: text.replace('"final_test_accuracy_per_seed": [\n', '"final_test_accuracy_per_seed": [\n  NaN,', 1)),
    ("studies/search.csv", lambda text: replace_cell(text, "val_accuracy", "nan")),
    ("Images/shift.csv", lambda text: replace_cell(text, "test_accuracy", "inf")),
])
def test_a_non_finite_number_in_a_results_file_stops_report_naming_it_and_writes_nothing(tmp_path, where, damage):
    copy = copy_of_the_repository(tmp_path)
    path = copy / where
    path.write_text(damage(path.read_text()))
    before = snapshot(copy)
    out = subprocess.run([sys.executable, "report.py"], cwd=copy, capture_output=True, text=True)
    assert out.returncode == 1 and where.split("/")[-1] in out.stderr and "nothing written" in out.stderr
    assert "not a finite number" in out.stderr
    assert snapshot(copy) == before  # no README, no table rewritten


def test_statistics_refuse_non_finite_inputs():
    from studies import stats

    for bad in ([99.5, float("nan"), 99.4], [99.5, float("inf")]):
        with pytest.raises(ValueError, match="not finite"):
            stats.describe(bad)
        with pytest.raises(ValueError, match="not finite"):
            stats.paired(bad, [99.0] * len(bad))


def make(*arguments, cwd=ROOT):
    return subprocess.run(["make", "--no-print-directory", *arguments], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_make_run_torch_cpu_installs_the_cpu_wheels_first():
    # A dry run: our machines reach only the package registries, not PyTorch's own index.
    with_cpu = make("-n", "-B", "run", "TORCH=cpu").splitlines()
    index = [i for i, line in enumerate(with_cpu) if "--index-url https://download.pytorch.org/whl/cpu torch torchvision" in line]
    requirements = [i for i, line in enumerate(with_cpu) if "-r requirements.txt" in line]
    assert index and requirements and index[0] < requirements[0]
    assert "download.pytorch.org" not in make("-n", "-B", "run")


def test_make_repairs_a_broken_venv(tmp_path):
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(os.path.join(ROOT, name), tmp_path)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nexit 1\n")  # what an interrupted venv creation can leave
    python.chmod(0o755)
    output = make("-n", "run", cwd=tmp_path)
    assert not (tmp_path / ".venv").exists()
    assert output.splitlines()[0].startswith("python3 -m venv .venv")


@pytest.mark.integration
def test_committed_pretrained_networks_score_their_recorded_accuracy():
    _, _, test_x, test_y = utils.load_tensors(os.path.join(ROOT, "data"))
    for norm in "BLG":
        net = Net.pretrained(norm)
        _, accuracy = utils.evaluate(net, test_x, test_y)
        assert accuracy == pytest.approx(net.info["test_accuracy"], abs=0.01), norm


@pytest.mark.integration
def test_real_mnist_is_loaded_whatever_lies_in_processed(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    data.load_raw(os.path.join(ROOT, "data"))  # fetches MNIST for the repository if missing
    for name in data.MNIST_MD5:
        shutil.copy(os.path.join(ROOT, "data", "MNIST", "raw", name), raw / name)
    (tmp_path / "MNIST" / "processed").mkdir()
    for name in ("training.pt", "test.pt"):
        torch.save((torch.zeros(60000, 28, 28, dtype=torch.uint8), torch.full((60000,), 7)),
                   tmp_path / "MNIST" / "processed" / name)
    train_images, train_labels, _, _ = data.load_mnist(str(tmp_path))
    raw_bytes = (raw / "train-images-idx3-ubyte").read_bytes()
    assert hashlib.md5(raw_bytes).hexdigest() == data.MNIST_MD5["train-images-idx3-ubyte"]
    assert train_images.numpy().tobytes() == raw_bytes[16:] and (train_labels != 7).any()


@pytest.mark.integration
def test_a_run_stuck_at_chance_raises_and_is_not_kept(tmp_path):
    with pytest.raises(utils.TrainingDiverged, match=r"BatchNorm \+ L1 \(λ=1e-05\), seed 1: the test loss .* epoch 1"):
        utils.run("B", epochs=2, train_limit=2000, max_lr=10.0, root=os.path.join(ROOT, "data"), progress=False,
                  device="cpu")
    with pytest.raises(RuntimeError, match="TrainingDiverged"):
        sweeps.sweep([dict(norm="B")], epochs=2, train_limit=2000, max_lr=10.0, results_dir=str(tmp_path),
                     root=os.path.join(ROOT, "data"), device="cpu", progress=False)
    assert not list(tmp_path.iterdir())


def test_a_notebook_parameter_of_the_wrong_kind_or_a_folder_of_other_files_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"SEEDS='\[2\]' must be a list of whole numbers.*-y"):
        utils.check_notebook_parameters("[2]", str(tmp_path / "new"))
    (tmp_path / "seeds.csv").write_text("norm,seed\n")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds files that the notebook did not write \(seeds.csv\)"):
        utils.check_notebook_parameters([1], str(tmp_path))
    os.remove(tmp_path / "seeds.csv")
    utils.check_notebook_parameters([1, 2], str(tmp_path))  # only the notebook's own files: it may replace them


def test_a_malformed_or_non_finite_results_file_is_named_with_the_command_that_makes_it(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"B": {"final": 99.5,')
    with pytest.raises(ValueError, match=rf"{path}: .*`python -m studies.seeds` writes it anew"):
        files.read_json(str(path), "python -m studies.seeds")
    path.write_text('{"B": Infinity}')
    with pytest.raises(ValueError, match="Infinity is not a finite number"):
        files.read_json(str(path))
    table = tmp_path / "t.csv"
    table.write_text("norm,seed,test_accuracy\nB,1,99.5\nB,2,nan\n")
    with pytest.raises(ValueError, match=rf"{table}, line 3, column test_accuracy: 'nan' is not a finite number"):
        files.read_csv(str(table))
    with pytest.raises(ValueError, match="strict JSON|Out of range float"):
        files.write_json(str(tmp_path / "out.json"), {"x": float("nan")})
    assert not (tmp_path / "out.json").exists()


def test_a_second_holder_of_a_lock_is_told_who_holds_it(tmp_path):
    lock = str(tmp_path / ".lock")
    with files.exclusive(lock, "`make run`"):
        holder = subprocess.run([sys.executable, "-c", f"import files\nwith files.exclusive({lock!r}, '`make run`'): pass"],
                                cwd=ROOT, capture_output=True, text=True)
        assert f"another `make run` is in progress (pid {os.getpid()})" in holder.stderr
    with files.exclusive(lock, "`make run`"):  # released: free again
        pass
