"""Many training runs at once, each trained at most once: the machinery behind utils.sweep.

A finished run is one file under `results_dir`, `<norm>-seed<seed>-<key>.pt`, holding its
configuration, history, final weights (a state_dict) and what produced it. It is written to a
temporary name and renamed, so a killed sweep leaves only complete files and loses only the
runs in flight. `key` hashes the run's full RunConfig, the code version (the source of the
code a run executes), the torch version, the device type and the data, and a file is used only
when its stored key and configuration match the run asked for: a result can never be taken
for another configuration's.

Runs go to worker processes (concurrent.futures with spawn), each loading MNIST once. On the
CPU, workers x threads per worker <= cores. On a GPU, the workers share it; NVIDIA's MPS
(`nvidia-cuda-mps-control -d`) lets their kernels run side by side instead of time-slicing.
"""

import concurrent.futures as futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import queue
import re
import threading
import time

import torch
from tqdm.auto import tqdm

import data as mnist
import report
import utils
from config import RunConfig, resolve_device

ROOT = os.path.dirname(os.path.abspath(__file__))
# The code a run executes; utils.py only down to its "Saved results" banner (results and plots
# below it never change a run). tests/test_sweeps.py checks that the training code is above it.
CODE_FILES = ("model.py", "config.py", "data.py", "cuda_graph.py", "utils.py")
UTILS_TRAINING_END = "# Saved results"


def code_version():
    """16 hex digits of sha256 over the source of the code a run executes."""
    digest = hashlib.sha256()
    for name in CODE_FILES:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            source = f.read()
        if name == "utils.py":
            source = source[:source.index(UTILS_TRAINING_END)]
        digest.update(name.encode() + b"\0" + source.encode())
    return digest.hexdigest()[:16]


def data_fingerprint(data):
    """'mnist' for MNIST loaded from a root (verified by MD5); else a hash of the tensors."""
    if data is None:
        return "mnist"
    digest = hashlib.sha256()
    for tensor in data:
        digest.update(str((tuple(tensor.shape), tensor.dtype)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def run_key(config, device, data_id, code=None):
    """The hash that names a run's file: its configuration and everything else it depends on."""
    blob = json.dumps({"config": dataclasses.asdict(config), "code": code or code_version(),
                       "torch": str(torch.__version__), "device": device.type, "data": data_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_path(results_dir, config, key):
    return os.path.join(results_dir, f"{config.norm}-seed{config.seed}-{key}.pt")


def save_run(path, key, config, model, history, device):
    """Write one finished run atomically (a temporary file, then a rename)."""
    record = {"key": key, "config": dataclasses.asdict(config), "history": history,
              "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
              "info": {"device": report.device_name(device), "torch": str(torch.__version__),
                       "threads": torch.get_num_threads(), "code": code_version(),
                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        torch.save(record, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_run(path, key, config):
    """The record saved at `path` if it is this run's (same key and configuration), else None."""
    if not os.path.exists(path):
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not ours or damaged: train the run again, say why
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"sweep: ignoring {path} ({type(error).__name__}: {reason}); training that run again")
        return None
    if record.get("key") != key or record.get("config") != dataclasses.asdict(config):
        print(f"sweep: {path} holds another run's result; training that run again")
        return None
    return record


def model_from(record, device="cpu"):
    """The trained Net of a saved run, in eval mode."""
    config = RunConfig(**record["config"])
    model = config.net()
    model.load_state_dict(record["state_dict"])
    return model.to(device).eval()


def _remove_orphaned_temporaries(results_dir):
    """Delete temporary files whose writing process is gone (killed mid-write)."""
    for name in os.listdir(results_dir):
        match = re.fullmatch(r"\..+\.(\d+)\.tmp", name)
        if match:
            try:
                os.kill(int(match.group(1)), 0)
            except ProcessLookupError:
                os.unlink(os.path.join(results_dir, name))
            except PermissionError:  # alive, another user's
                pass


# ---------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------

_WORKER = {}


def _init_worker(parent, root, data, device, threads, progress):
    """Runs once per worker: a watch that ends the worker if the sweep's process (`parent`)
    dies (killed, say) instead of training on; threads; the data on the device; the progress
    queue."""
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    tensors = mnist.load_tensors(root, device) if data is None else tuple(t.to(device) for t in data)
    _WORKER.update(tensors=tensors, from_root=data is None, device=device, progress=progress)


def _exit_when_orphaned(parent):
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _train_one(config_fields, key, path):
    """Train one run in this worker and save it; returns its key."""
    config = RunConfig(**config_fields)
    tensors = _WORKER["tensors"]
    if _WORKER["from_root"]:
        tensors = mnist.select(tensors, config.train_limit, config.test_limit, config.validation)
    model, history = utils.train(config, tensors, _WORKER["device"], progress=False,
                                 on_epoch=lambda epoch, history: _WORKER["progress"].put(1))
    save_run(path, key, config, model, history, _WORKER["device"])
    return key


def cores():
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


LAST_SWEEP = {"runs": 0, "trained": 0}  # what the latest sweep() in this process did


def sweep(runs, workers=None, results_dir="runs", progress=True, threads=None, return_models=False,
          **common):
    """See utils.sweep."""
    device = resolve_device(common.pop("device", None))
    root, data = common.pop("root", "data"), common.pop("data", None)
    configs = [RunConfig.build(**{**common, **run}) for run in runs]
    if data is not None:
        mnist.check_tensors(data)  # here, before any worker starts
        for config in configs:
            utils.check_selection(config)
    data_id, code = data_fingerprint(data), code_version()
    keys = [run_key(config, device, data_id, code) for config in configs]
    os.makedirs(results_dir, exist_ok=True)
    _remove_orphaned_temporaries(results_dir)
    paths = {key: run_path(results_dir, config, key) for config, key in zip(configs, keys)}
    records = {key: load_run(paths[key], key, config) for config, key in zip(configs, keys)}
    todo = {key: config for config, key in zip(configs, keys) if records[key] is None}
    LAST_SWEEP.update(runs=len(keys), trained=len(todo))
    if todo:
        workers = workers or max(1, min(len(todo), 8 if device.type == "cuda" else cores()))
        threads = threads or max(1, cores() // workers)
        print(f"sweep: {len(keys) - len(todo)} of {len(keys)} runs loaded from {results_dir}/; training "
              f"{len(todo)} on {device} with {workers} worker(s) x {threads} thread(s)")
        _train_all(todo, paths, workers, threads, progress, root, data, device)
        records.update({key: load_run(paths[key], key, config) for key, config in todo.items()})
        missing = [paths[key] for key in todo if records[key] is None]
        if missing:
            raise RuntimeError(f"sweep: trained but could not read back {', '.join(missing)}")
    elif progress:
        print(f"sweep: all {len(keys)} runs loaded from {results_dir}/")
    if return_models:
        return [(model_from(records[key], device), records[key]["history"]) for key in keys]
    return [records[key]["history"] for key in keys]


def _train_all(todo, paths, workers, threads, progress, root, data, device):
    """Train the runs in `todo` ({key: config}) in `workers` processes; raise after all have
    ended if any failed (the finished ones are saved)."""
    context = multiprocessing.get_context("spawn")
    epochs = context.Queue()
    bar = tqdm(total=sum(c.epochs for c in todo.values()), unit="epoch", disable=not progress,
               desc=f"sweep of {len(todo)} runs")
    pool = futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                       initargs=(os.getpid(), root, data, str(device), threads, epochs))
    failures = []
    try:
        pending = {pool.submit(_train_one, dataclasses.asdict(config), key, paths[key]): config
                   for key, config in todo.items()}
        while pending:
            done, _ = futures.wait(pending, timeout=0.5, return_when=futures.FIRST_COMPLETED)
            while True:
                try:
                    bar.update(epochs.get_nowait())
                except queue.Empty:
                    break
            for future in done:
                config = pending.pop(future)
                if future.exception() is not None:
                    error = future.exception()
                    failures.append(f"{config.label}, seed {config.seed}: {type(error).__name__}: {error}")
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
        raise RuntimeError(f"{len(failures)} of {len(todo)} runs failed (finished runs are saved in "
                           f"{os.path.dirname(next(iter(paths.values())))}/):\n  " + "\n  ".join(failures))
