"""sweeps.sweep: many runs in worker processes, identical to utils.run, resumable, never mixed up."""

import dataclasses
import os
import shutil
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
    first = sweeps.sweep(RUNS, workers=2, threads=1, results_dir=str(tmp_path), epochs=1, data=data,
                        device="cpu", progress=False)
    first_seconds = time.perf_counter() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker ran
    try:
        alone = [utils.run(epochs=1, data=data, device="cpu", progress=False, **run)[1] for run in RUNS]
    finally:
        torch.set_num_threads(threads)
    assert without_seconds(first) == without_seconds(alone)  # to every digit, in the order of RUNS
    assert sweeps.LAST_SWEEP == {"runs": len(RUNS), "trained": len(RUNS), "workers": 2, "threads": 1}  # provenance

    start = time.perf_counter()
    second = sweeps.sweep(RUNS, workers=2, threads=1, results_dir=str(tmp_path), epochs=1, data=data,
                         device="cpu", progress=False)
    assert time.perf_counter() - start < 0.1 * first_seconds
    assert second == first and sweeps.LAST_SWEEP == {"runs": len(RUNS), "trained": 0, "workers": 0, "threads": 0}
    assert len(os.listdir(tmp_path)) == len(RUNS)


def test_sweep_returns_trained_models(tmp_path, data):
    pairs = sweeps.sweep(RUNS[:2], workers=8, results_dir=str(tmp_path), epochs=1, data=data,
                        device="cpu", progress=False, return_models=True)
    assert sweeps.LAST_SWEEP["workers"] == 2  # the processes it used, at most one per run, not the argument
    for (model, history), run in zip(pairs, RUNS):
        assert model.norm == run["norm"] and not model.training
        assert utils.evaluate(model, data[2], data[3])[1] == pytest.approx(history["test_accuracy"][-1])


def test_a_file_is_used_only_by_its_own_configuration(tmp_path, data, capsys):
    sweeps.sweep(RUNS[:1], workers=1, results_dir=str(tmp_path), epochs=1, data=data, device="cpu",
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
        changed = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v / 2 if v else 0.1,
                   type(None): lambda v: 7}[type(value)](value)
        keys.add(sweeps.run_key(dataclasses.replace(base, **{field.name: changed}), cpu, "mnist"))
    keys.add(sweeps.run_key(base, cpu, "sha256:0"))
    keys.add(sweeps.run_key(base, torch.device("cuda"), "mnist"))
    assert len(keys) == 1 + (len(dataclasses.fields(base)) - 3) + 2  # each change, a new key


def test_the_key_is_the_configuration_and_training_version_not_the_source_text(tmp_path, monkeypatch):
    """A comment added to model.py and utils.py leaves every key as it is; TRAINING_VERSION changes it."""
    copy = tmp_path / "copy"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "data", "runs", "Images", "*.ipynb"))
    for name in ("model.py", "utils.py"):
        (copy / name).write_text((copy / name).read_text() + "\n# a comment that changes nothing\n")
    script = ("import json, torch, sweeps, utils; configs = [utils.RunConfig(norm=n, seed=s) for n in 'BLG' for s in (1, 2)]; "
              "print(json.dumps([sweeps.run_key(c, torch.device('cpu'), 'mnist') for c in configs]))")
    keys = {}
    for where in (ROOT, copy):
        out = subprocess.run([sys.executable, "-c", script], cwd=where, capture_output=True, text=True, check=True)
        keys[where] = out.stdout.strip()
    assert keys[ROOT] == keys[copy]
    before = sweeps.run_key(utils.RunConfig(), torch.device("cpu"), "mnist")
    monkeypatch.setattr(utils, "TRAINING_VERSION", utils.TRAINING_VERSION + 1)
    assert sweeps.run_key(utils.RunConfig(), torch.device("cpu"), "mnist") != before


def _one_record(tmp_path, data):
    sweeps.sweep(RUNS[:1], workers=1, results_dir=str(tmp_path), epochs=1, data=data, device="cpu", progress=False)
    (path,) = tmp_path.glob("*.pt")
    return path


@pytest.mark.parametrize("damage", ["flipped bit", "nan weight", "list", "no history", "short history", "truncated"])
def test_a_damaged_record_is_retrained_saying_why(tmp_path, data, capsys, damage):
    path = _one_record(tmp_path, data)
    record = torch.load(path, weights_only=True)
    name, weight = next((k, v) for k, v in record["state_dict"].items() if v.dim() == 4)
    if damage == "flipped bit":
        weight.view(torch.int32).view(-1)[3] ^= 1 << 30  # an exponent bit of one weight
    elif damage == "nan weight":
        weight.view(-1)[0] = float("nan")
        record["sha256"] = sweeps.state_digest(record["state_dict"])  # consistent hash, yet NaN
    elif damage == "list":
        record = [record]
    elif damage == "no history":
        del record["history"]
    elif damage == "short history":
        record["history"] = {k: v[:0] for k, v in record["history"].items()}
    torch.save(record, path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    config = utils.RunConfig(norm="B", seed=1, epochs=1)
    key = sweeps.run_key(config, torch.device("cpu"), sweeps.data_fingerprint(data))
    assert sweeps.load_run(str(path), key, config) is None
    assert f"not using {path}" in capsys.readouterr().out
    sweeps.sweep(RUNS[:1], workers=1, results_dir=str(tmp_path), epochs=1, data=data, device="cpu", progress=False)
    assert sweeps.load_run(str(path), key, config) is not None  # retrained and saved again


def test_a_results_dir_of_other_files_or_unwritable_is_refused_before_training(tmp_path, data):
    (tmp_path / "seeds.csv").write_text("norm,seed\n")
    with pytest.raises(ValueError, match=r"holds files a sweep does not write \(seeds.csv\)"):
        sweeps.sweep(RUNS[:1], results_dir=str(tmp_path), epochs=1, data=data, device="cpu", progress=False)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere")
    with pytest.raises(ValueError, match="cannot be written"):
        sweeps.sweep(RUNS[:1], results_dir=str(locked), epochs=1, data=data, device="cpu", progress=False)


@pytest.mark.parametrize("setting", [dict(workers=0), dict(workers=2.5), dict(threads=-1), dict(threads="2")])
def test_bad_workers_or_threads_are_named(tmp_path, data, setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        sweeps.sweep(RUNS[:1], results_dir=str(tmp_path), epochs=1, data=data, device="cpu", progress=False, **setting)


def test_only_the_sweeps_own_orphaned_temporaries_are_removed(tmp_path, data):
    dead = 2 ** 22 + 12345  # beyond Linux's default pid range: no such process
    ours = tmp_path / f".B-seed1-{'0' * 20}.pt.{dead}.x7q2.tmp"
    ours.write_text("half a run")
    (tmp_path / f".B-seed2-{'0' * 20}.pt.{dead}.x7q2.tmp").mkdir()  # a folder of that name is left alone
    sweeps.sweep(RUNS[:1], workers=1, results_dir=str(tmp_path), epochs=1, data=data, device="cpu", progress=False)
    assert not ours.exists() and (tmp_path / f".B-seed2-{'0' * 20}.pt.{dead}.x7q2.tmp").is_dir()


NO_GUARD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import data, sweeps
    sweeps.sweep([dict(norm="B")], workers=1, results_dir={results!r}, epochs=1, data=data.synthetic(64, 16),
                 device="cpu", progress=False)
""")


def test_a_script_without_a_main_guard_is_told_what_to_do(tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text(NO_GUARD.format(root=ROOT, results=str(tmp_path / "runs")))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and 'if __name__ == "__main__":' in out.stderr


KILLED_SWEEP = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import data, sweeps
    if __name__ == "__main__":
        sweeps.sweep({runs!r}, workers=2, threads=1, results_dir={results!r}, epochs=4,
                    data=data.synthetic(2000, 200), device="cpu", progress=False)
""")


def test_a_sweep_killed_mid_way_leaves_complete_files_and_the_next_call_finishes(make_data, tmp_path):
    results = tmp_path / "runs"
    script = tmp_path / "sweep.py"
    script.write_text(KILLED_SWEEP.format(root=ROOT, runs=RUNS,
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
    histories = sweeps.sweep(RUNS, workers=2, threads=1, results_dir=str(results), epochs=4, data=data,
                            device="cpu", progress=False)
    assert len(histories) == len(RUNS) and all(len(h["test_accuracy"]) == 4 for h in histories)
    assert len(list(results.glob("*.pt"))) == len(RUNS)
    assert all(os.stat(results / name).st_mtime_ns == mtime for name, mtime in finished.items())
    assert not [p for p in results.iterdir() if p.suffix == ".tmp"]


def test_workers_stop_when_the_sweep_process_is_killed(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(KILLED_SWEEP.format(root=ROOT, runs=RUNS * 3,
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


def test_on_a_gpu_runs_alike_but_for_their_seeds_train_as_one_network_and_are_saved_as_runs(tmp_path, data, monkeypatch):
    """The GPU's path (sweeps.groups, then _train_task in a worker), run here on the CPU in this process."""
    configs = [utils.RunConfig(norm=n, seed=s, epochs=1) for n in "BG" for s in (1, 2, 3)] + [
        utils.RunConfig(norm="B", seed=1, epochs=1, max_lr=0.02)]
    todo = {f"{i:020x}": c for i, c in enumerate(configs)}
    paths = {key: sweeps.run_path(str(tmp_path), c, key) for key, c in todo.items()}
    monkeypatch.setattr(sweeps, "GROUP", 2)
    tasks = sweeps.groups(todo, paths)
    assert [[f["norm"] + str(f["seed"]) for f, _, _ in task] for task in tasks] == [["B1", "B2"], ["B3"], ["G1", "G2"],
                                                                                    ["G3"], ["B1"]]
    monkeypatch.setitem(sweeps._WORKER, "tensors", data)
    monkeypatch.setitem(sweeps._WORKER, "from_root", False)
    monkeypatch.setitem(sweeps._WORKER, "device", torch.device("cpu"))
    monkeypatch.setitem(sweeps._WORKER, "progress", type("Queue", (), {"put": lambda self, n: None})())
    assert sweeps._train_task(tasks[2], together=True) == []
    for fields, key, path in tasks[2]:
        config = utils.RunConfig(**fields)
        record = sweeps.load_run(path, key, config)
        assert record is not None and record["info"]["grouped"] == 2
        alone = utils.run(data=data, device="cpu", progress=False, **fields)[1]
        assert record["history"]["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-5)
