"""utils.sweep: many runs in worker processes, identical to utils.run, resumable, never mixed up."""

import dataclasses
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import sweeps
import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = [dict(norm="B", seed=1), dict(norm="L", seed=1), dict(norm="G", seed=2), dict(norm="B", seed=2)]


@pytest.fixture(scope="module")
def data(make_data):
    return make_data(2000, 200)  # 1 epoch: 16 steps of 128


def without_seconds(histories):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in histories]


def test_sweep_equals_run_then_loads_from_its_files(tmp_path, data):
    start = time.perf_counter()
    first = utils.sweep(RUNS, workers=2, threads=1, results_dir=str(tmp_path), epochs=1, data=data,
                        device="cpu", progress=False)
    first_seconds = time.perf_counter() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker ran
    try:
        alone = [utils.run(epochs=1, data=data, device="cpu", progress=False, **run)[1] for run in RUNS]
    finally:
        torch.set_num_threads(threads)
    assert without_seconds(first) == without_seconds(alone)  # to every digit, in the order of RUNS

    start = time.perf_counter()
    second = utils.sweep(RUNS, workers=2, threads=1, results_dir=str(tmp_path), epochs=1, data=data,
                         device="cpu", progress=False)
    assert time.perf_counter() - start < 0.1 * first_seconds
    assert second == first
    assert len(os.listdir(tmp_path)) == len(RUNS)


def test_sweep_returns_trained_models(tmp_path, data):
    pairs = utils.sweep(RUNS[:2], workers=1, results_dir=str(tmp_path), epochs=1, data=data,
                        device="cpu", progress=False, return_models=True)
    for (model, history), run in zip(pairs, RUNS):
        assert model.norm == run["norm"] and not model.training
        assert utils.evaluate(model, data[2], data[3])[1] == pytest.approx(history["test_accuracy"][-1])


def test_a_file_is_used_only_by_its_own_configuration(tmp_path, data, capsys):
    utils.sweep(RUNS[:1], workers=1, results_dir=str(tmp_path), epochs=1, data=data, device="cpu",
                progress=False)
    (path,) = tmp_path.iterdir()
    config = utils.RunConfig(norm="B", seed=1, epochs=1, max_lr=0.02)
    key = sweeps.run_key(config, torch.device("cpu"), sweeps.data_fingerprint(data))
    os.rename(path, sweeps.run_path(str(tmp_path), config, key))  # a file under another run's name
    assert sweeps.load_run(sweeps.run_path(str(tmp_path), config, key), key, config) is None
    assert "another run" in capsys.readouterr().out


def test_the_key_changes_with_every_setting_and_the_data():
    cpu = torch.device("cpu")
    base = utils.RunConfig()
    keys = {sweeps.run_key(base, cpu, "mnist")}
    for field in dataclasses.fields(base):
        if field.name in ("norm", "groups", "l1_lambda"):
            continue
        value = getattr(base, field.name)
        other_string = {"adamw": "sgd", "fp32": "bf16", base.layout: "c14 p v14", "relu": "silu",
                        "silu": "relu"}
        changed = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v / 2 if v else 0.1,
                   str: other_string.get, type(None): lambda v: 7}[type(value)](value)
        keys.add(sweeps.run_key(dataclasses.replace(base, **{field.name: changed}), cpu, "mnist"))
    keys.add(sweeps.run_key(base, cpu, "sha256:0"))
    keys.add(sweeps.run_key(base, torch.device("cuda"), "mnist"))
    assert len(keys) == 1 + (len(dataclasses.fields(base)) - 3) + 2  # each change, a new key


def test_code_version_covers_the_code_a_run_executes():
    source = open(os.path.join(ROOT, "utils.py")).read()
    end = source.index(sweeps.UTILS_TRAINING_END)
    for function in (utils.augment, utils.l1_penalty, utils.training_loss, utils.train_step,
                     utils.train_epoch, utils.predict, utils.evaluate, utils.setup, utils.train):
        assert source.index(inspect.getsource(function)) < end, function.__name__


KILLED_SWEEP = textwrap.dedent("""
    import sys
    sys.path[:0] = [{root!r}, {tests!r}]
    import utils
    from conftest import make_tiny_data  # a script of its own, not a test module
    if __name__ == "__main__":
        utils.sweep({runs!r}, workers=2, threads=1, results_dir={results!r}, epochs=4,
                    data=make_tiny_data(2000, 200), device="cpu", progress=False)
""")


def test_a_sweep_killed_mid_way_leaves_complete_files_and_the_next_call_finishes(make_data, tmp_path):
    results = tmp_path / "runs"
    script = tmp_path / "sweep.py"
    script.write_text(KILLED_SWEEP.format(root=ROOT, tests=os.path.join(ROOT, "tests"), runs=RUNS,
                                          results=str(results)))
    process = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (results.exists() and any(results.glob("*.pt"))):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and its workers, mid-way
    process.wait()

    finished = {path.name: path.stat().st_mtime_ns for path in results.glob("*.pt")}
    assert 1 <= len(finished) < len(RUNS)
    for path in results.glob("*.pt"):  # every file is a complete, loadable run
        record = torch.load(path, weights_only=True)
        assert len(record["history"]["test_accuracy"]) == 4 and record["key"] in path.name

    data = make_data(2000, 200)
    histories = utils.sweep(RUNS, workers=2, threads=1, results_dir=str(results), epochs=4, data=data,
                            device="cpu", progress=False)
    assert len(histories) == len(RUNS) and all(len(h["test_accuracy"]) == 4 for h in histories)
    assert len(list(results.glob("*.pt"))) == len(RUNS)
    assert all(os.stat(results / name).st_mtime_ns == mtime for name, mtime in finished.items())
    assert not [p for p in results.iterdir() if p.suffix == ".tmp"]


def test_workers_stop_when_the_sweep_process_is_killed(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(KILLED_SWEEP.format(root=ROOT, tests=os.path.join(ROOT, "tests"), runs=RUNS * 3,
                                          results=str(tmp_path / "runs")))
    process = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    group = process.pid  # the session's process group: the sweep and its workers

    def members():
        return subprocess.run(["ps", "-o", "pid=", "-g", str(group)], capture_output=True, text=True).stdout.split()

    deadline = time.time() + 120
    while time.time() < deadline and len(members()) < 3:  # the sweep, its workers (and a tracker)
        time.sleep(0.1)
    process.kill()  # the sweep alone, as `kill PID` would
    process.wait()
    deadline = time.time() + 10
    while time.time() < deadline and members():
        time.sleep(0.2)
    assert members() == [], "workers kept training after their sweep died"
