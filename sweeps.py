"""Many training runs at once, each trained at most once.

    import sweeps
    histories = sweeps.sweep([dict(norm=n, seed=s) for n in "BLG" for s in range(1, 11)])

A finished run is one file under `results_dir`, `<norm>-seed<seed>-<key>.pt` (configuration, history,
weights with their sha256, provenance), written to a temporary name and renamed, so a killed sweep loses
only the runs in flight. `key` hashes what a run computes (run_key); a file is used only when its key,
configuration and weights check out, and retrained (saying why) otherwise.

Runs go to spawned worker processes, each loading MNIST once (default_workers says how many). On a GPU,
runs alike but for their seeds train as one network (grouped.py) and the workers share the GPU; NVIDIA's
MPS (`nvidia-cuda-mps-control -d`) lets their kernels run side by side instead of time-slicing.
"""

import concurrent.futures as futures
import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import re
import tempfile
import threading
import time

import torch
from tqdm.auto import tqdm

import data as mnist
import grouped
import utils
from config import RunConfig, resolve_device
from files import atomic_write, device_name, git_commit, process_alive
from model import check_state, state_digest

COMMIT = git_commit()  # of the code that trains here, recorded with each run
RECORD = re.compile(r"[BLG]-seed\d+-[0-9a-f]{20}(\.[a-z]+)?\.(pt|json)")  # a run, or a study's scores of it
TEMPORARY = re.compile(rf"\.({RECORD.pattern})\.(\d+)\.[^.]+\.tmp")  # files.atomic_write's, of a RECORD


def data_fingerprint(data):
    """'mnist' for MNIST loaded from a root (verified by MD5); else a hash of the tensors."""
    if data is None:
        return "mnist"
    digest = hashlib.sha256()
    for tensor in data:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def run_key(config, device, data_id):
    """The hash that names a run's file: its full RunConfig, TRAINING_VERSION, torch, device type and data."""
    blob = json.dumps({"config": dataclasses.asdict(config), "training": utils.TRAINING_VERSION,
                       "torch": str(torch.__version__), "device": device.type, "data": data_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_path(results_dir, config, key):
    return os.path.join(results_dir, f"{config.norm}-seed{config.seed}-{key}.pt")


def save_run(path, key, config, model, history, device, grouped=1):
    """Write one finished run atomically; grouped: how many runs trained with it as one network."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    info = {"device": device_name(device), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "training_version": utils.TRAINING_VERSION, "grouped": grouped, "commit": COMMIT,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    record = {"key": key, "config": dataclasses.asdict(config), "history": history, "state_dict": state,
              "sha256": state_digest(state), "info": info}
    buffer = io.BytesIO()
    torch.save(record, buffer)
    atomic_write(path, buffer.getvalue())


def load_run(path, key, config):
    """The record saved at `path` if it is this run's and sound, else None (saying why, if it exists)."""
    if not os.path.exists(path):
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged or not ours
        return _retrain(path, f"{type(error).__name__}: {str(error).strip()[:200]}")
    if not isinstance(record, dict):
        return _retrain(path, f"it holds a {type(record).__name__}, not a run record")
    if record.get("key") != key or record.get("config") != dataclasses.asdict(config):
        return _retrain(path, "it holds another run's result")
    history = record.get("history")
    if (not isinstance(history, dict) or set(history) != set(utils.HISTORY_KEYS)
            or any(not isinstance(v, list) or len(v) != config.epochs for v in history.values())):
        return _retrain(path, f"its history is not {config.epochs} epochs of {', '.join(utils.HISTORY_KEYS)}")
    problem = check_state(record.get("state_dict"), record.get("sha256"))
    return _retrain(path, problem) if problem else record


def _retrain(path, why):
    print(f"sweep: not using {path} ({why}); training that run again")
    return None


def model_from(record, device="cpu"):
    model = RunConfig(**record["config"]).net()
    model.load_state_dict(record["state_dict"])
    return model.to(device).eval()


def check_results_dir(results_dir):
    """Create `results_dir` if needed; raise ValueError, before anything trains, if it holds files a sweep
    does not write (it would mix runs with other results) or cannot be written."""
    if os.path.exists(results_dir) and not os.path.isdir(results_dir):
        raise ValueError(f"results_dir={results_dir!r} is a file, not a folder; name a folder for the runs")
    os.makedirs(results_dir, exist_ok=True)
    foreign = sorted(name for name in os.listdir(results_dir) if not (RECORD.fullmatch(name) or name.startswith(".")))
    if foreign:
        raise ValueError(f"results_dir={results_dir!r} holds files a sweep does not write ({', '.join(foreign[:6])}"
                         f"{', ...' if len(foreign) > 6 else ''}); keep runs in a folder of their own, e.g. runs/")
    try:
        tempfile.TemporaryFile(dir=results_dir).close()
    except OSError as error:
        raise ValueError(f"results_dir={results_dir!r} cannot be written ({error.strerror}); finished runs could not "
                         "be saved: make it writable or name another folder") from None


def _remove_orphaned_temporaries(results_dir):
    """Delete save_run's temporary files whose writing process is gone (killed mid-write)."""
    for name in os.listdir(results_dir):
        match = TEMPORARY.fullmatch(name)
        path = os.path.join(results_dir, name)
        if match and os.path.isfile(path) and not process_alive(int(match.group(4))):
            os.unlink(path)


# ---------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------

_WORKER = {}


def _init_worker(parent, root, data, device, threads, progress):
    """Set up a worker, with a watch that ends it if the sweep's process (`parent`) dies, rather than train on."""
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    device = torch.device(device)
    tensors = mnist.load_tensors(root, device) if data is None else tuple(t.to(device) for t in data)
    _WORKER.update(tensors=tensors, from_root=data is None, device=device, progress=progress)


def _exit_when_orphaned(parent):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _worker_data(config):
    if _WORKER["from_root"]:
        return mnist.select(_WORKER["tensors"], config.train_limit, config.test_limit, config.validation)
    return _WORKER["tensors"]


def _train_task(task, together):
    """Train a task, [(config fields, key, path)], in this worker and save each run: runs alike but for their seeds
    as one network if `together` (on a GPU), else its one run by utils.train (a failure raises); returns the
    failures, one line each."""
    configs = [RunConfig(**fields) for fields, _, _ in task]
    device = _WORKER["device"]

    def tick(*_):  # an epoch done: for the sweep's progress bar
        _WORKER["progress"].put(1)

    if together:
        results = grouped.train_group(configs, _worker_data(configs[0]), device, on_epoch=tick)
    else:
        [config] = configs
        results = [utils.train(config, _worker_data(config), device, progress=False, on_epoch=tick)]
    failures = []
    for config, (_, key, path), result in zip(configs, task, results):
        if isinstance(result, Exception):
            failures.append(f"{config.label}, seed {config.seed}: {type(result).__name__}: {result}")
        else:
            save_run(path, key, config, *result, device, grouped=len(task))
    return failures


def cores():  # CPU cores this process may use
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def default_workers(device, runs):
    """8 sharing a GPU; on a CPU one per run while there are at most twice as many runs as cores (3 runs on
    2 cores end together, where 2 workers would leave a core idle while the third trains), else one per core."""
    if device.type == "cuda":
        return 8
    return runs if runs <= 2 * cores() else cores()


GROUP = 20  # on a GPU, runs alike but for their seeds train as one network, up to this many


def groups(todo, paths):
    """[[(config fields, key, path)]]: the runs of `todo` ({key: config}) alike but for their seeds, in
    groups of up to GROUP, in the order of their first run."""
    alike = {}
    for key, config in todo.items():
        alike.setdefault(dataclasses.replace(config, seed=0), []).append((dataclasses.asdict(config), key, paths[key]))
    return [runs[i:i + GROUP] for runs in alike.values() for i in range(0, len(runs), GROUP)]


LAST_SWEEP = {"runs": 0, "trained": 0, "workers": 0, "threads": 0}  # what the latest sweep() in this process did


def sweep(runs, workers=None, results_dir="runs", progress=True, threads=None, return_models=False, **common):
    """Train runs concurrently, each at most once; returns their histories in the order of `runs`, or
    (model, history) pairs with return_models=True.

    runs: dicts of RunConfig fields, e.g. [dict(norm="B", seed=1)]; common: those shared by all, and device,
    root (MNIST's folder) or data (four tensors, as data.load_tensors returns). workers: processes
    (default_workers(), at most one per run); threads: per worker (default cores // workers, at least 1).
    From a script, call it under `if __name__ == "__main__":` (the workers import the script)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # a spawned worker importing the script
        raise RuntimeError("sweeps.sweep was called while a worker process imported your script: put the call "
                           "under `if __name__ == \"__main__\":`")
    device = resolve_device(common.pop("device", None))
    root, data = common.pop("root", "data"), common.pop("data", None)
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256):
            raise ValueError(f"{name}={value!r} must be a whole number from 1 to 256 "
                             "(or None: chosen for this machine)")
    configs = [RunConfig.build(**{**common, **run}) for run in runs]
    if data is not None:
        mnist.check_tensors(data)  # here, before any worker starts
        for config in configs:
            utils.check_selection(config)
    data_id = data_fingerprint(data)
    keys = [run_key(config, device, data_id) for config in configs]
    check_results_dir(results_dir)
    _remove_orphaned_temporaries(results_dir)
    paths = {key: run_path(results_dir, config, key) for config, key in zip(configs, keys)}
    records = {key: load_run(paths[key], key, config) for config, key in zip(configs, keys)}
    todo = {key: config for config, key in zip(configs, keys) if records[key] is None}
    LAST_SWEEP.update(runs=len(keys), trained=len(todo), workers=0, threads=0)  # the processes that trained
    if todo:
        tasks = (groups(todo, paths) if device.type == "cuda" else  # alike but for their seeds: one network
                 [[(dataclasses.asdict(config), key, paths[key])] for key, config in todo.items()])
        workers = min(workers or default_workers(device, len(tasks)), len(tasks))
        threads = threads or max(1, cores() // workers)
        LAST_SWEEP.update(workers=workers, threads=threads)
        print(f"sweep: {len(keys) - len(todo)} of {len(keys)} runs loaded from {results_dir}/; training "
              f"{len(todo)} on {device} with {workers} worker(s) x {threads} thread(s)")
        _train_all(tasks, workers, threads, progress, root, data, device)
        records.update({key: load_run(paths[key], key, config) for key, config in todo.items()})
        missing = [paths[key] for key in todo if records[key] is None]
        if missing:
            raise RuntimeError(f"sweep: trained but could not read back {', '.join(missing)}")
    elif progress:
        print(f"sweep: all {len(keys)} runs loaded from {results_dir}/")
    if return_models:
        return [(model_from(records[key], device), records[key]["history"]) for key in keys]
    return [records[key]["history"] for key in keys]


def _train_all(tasks, workers, threads, progress, root, data, device):
    """Train `tasks` (lists of (config fields, key, path): one run each on a CPU, a group on a GPU) in
    `workers` processes; raise after all have ended if any failed (the finished ones are saved)."""
    context = multiprocessing.get_context("spawn")
    epochs = context.Queue()
    bar = tqdm(total=sum(fields["epochs"] for task in tasks for fields, _, _ in task), unit="epoch",
               disable=not progress, desc=f"sweep of {sum(map(len, tasks))} runs")
    pool = futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                       initargs=(os.getpid(), root, data, str(device), threads, epochs))
    failures = []
    try:
        pending = {pool.submit(_train_task, task, device.type == "cuda"): task for task in tasks}
        while pending:
            done, _ = futures.wait(pending, timeout=0.5, return_when=futures.FIRST_COMPLETED)
            while not epochs.empty():  # this process is the queue's one reader
                bar.update(epochs.get())
            for future in done:
                task = pending.pop(future)
                error = future.exception()
                if isinstance(error, futures.process.BrokenProcessPool):
                    raise RuntimeError("sweep: a worker process died (its error, if any, is above). From a script, "
                                       "call sweeps.sweep under `if __name__ == \"__main__\":`; otherwise it ran out "
                                       "of memory or was killed. Finished runs are saved") from None
                if error is not None:
                    failures += [f"{RunConfig(**fields).label}, seed {fields['seed']}: {type(error).__name__}: {error}"
                                 for fields, _, _ in task]
                else:
                    failures += future.result()
    except BaseException:
        # Interrupted: stop the workers now rather than let them finish (3.14 has terminate_workers)
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown()
    if failures:
        raise RuntimeError(f"{len(failures)} of {sum(map(len, tasks))} runs failed (finished runs are saved in "
                           f"{os.path.dirname(tasks[0][0][2])}/):\n  " + "\n  ".join(failures))
