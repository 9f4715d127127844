"""Speed of utils.run against the textbook training loop, on real MNIST, in one invocation.

    python benchmarks/speed.py                 # one epoch each + the whole notebook (3 x 20 epochs)
    python benchmarks/speed.py --skip-notebook # one epoch each only
    python benchmarks/speed.py --skip-notebook --compile  # also: what torch.compile costs and saves
    python benchmarks/speed.py --skip-notebook --ceiling  # also: the reference's data pipeline
                                               # alone and the network alone (the ratio's ceiling)
    python benchmarks/speed.py --skip-notebook --profile  # also: where an epoch of ours spends its time

(a) reference: the textbook loop: torchvision MNIST with per-sample RandomRotation(7),
    ToTensor and Normalize in a DataLoader (2 workers, batch 128, shuffled), SGD (lr 0.01,
    momentum 0.9), fp32, a test pass in batches of 128; the same network as ours (model.Net).
(b) ours: utils.run with its defaults (data as tensors on the device, batched augmentation).
Each does one epoch of training on the 60,000 images plus a test pass on the 10,000, repeated
(--repeats, default 3); the median is reported because single epochs vary by 20% here.
--compile times utils.train_epoch + utils.evaluate with a torch.compile'd Net: the first
epoch includes compiling (into an empty compile cache); the break-even is the compile time
over the seconds saved per epoch.
--ceiling times two more things: (c) the reference's DataLoader alone, iterated with no model,
and (d) our recipe's network work alone: Net's forward, the loss (with the L1 term for B),
backward and the AdamW step on one fixed batch already in memory, as many steps as an epoch
has, plus the test forward passes; no augmentation, no indexing. No data pipeline makes an
epoch of this recipe faster than (d) at that batch size, so reference / (d) is the most any
pipeline change can gain; it is printed for each --ceiling-batch-sizes, in fp32 and under bf16
autocast. (d) uses the fixed batch at every step, so it measures time only.
--profile runs torch.profiler over 40 batches of utils.train_epoch (after 10 warm-up batches)
and prints the operators with the most self CPU time.
The notebook run executes S6_Normalization.ipynb's cells in this process with its default
parameters, writing its images and runs to temporary folders (the committed ones are not touched).
--gpu (on a CUDA machine) prints instead: one epoch per variant eagerly and through the CUDA-graph
fast path, the whole notebook, and a sweep of 3 variants x 10 seeds x 20 epochs; with
--gpu-accuracy the sweep runs eagerly too, to compare the two paths' mean final accuracies.
    python benchmarks/speed.py --gpu --gpu-accuracy   # start MPS first: nvidia-cuda-mps-control -d
"""

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import data as mnist  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

import report  # noqa: E402
import utils  # noqa: E402
from model import Net  # noqa: E402


def reference_loaders(root, batch_size=128, workers=2):
    """The textbook DataLoaders: per-sample RandomRotation(7), ToTensor and Normalize."""
    normalize = transforms.Normalize((mnist.MNIST_MEAN,), (mnist.MNIST_STD,))
    train_set = datasets.MNIST(root, train=True, download=False, transform=transforms.Compose(
        [transforms.RandomRotation((-7.0, 7.0), fill=(0,)), transforms.ToTensor(), normalize]))
    test_set = datasets.MNIST(root, train=False, download=False,
                              transform=transforms.Compose([transforms.ToTensor(), normalize]))
    loader = dict(batch_size=batch_size, num_workers=workers, pin_memory=False)
    return (torch.utils.data.DataLoader(train_set, shuffle=True, **loader),
            torch.utils.data.DataLoader(test_set, shuffle=False, **loader))


def reference_epoch(norm, root, batch_size=128, workers=2):
    """One textbook epoch (train + test) on the CPU; returns (seconds, test accuracy %)."""
    train_loader, test_loader = reference_loaders(root, batch_size, workers)
    torch.manual_seed(1)
    model = Net(norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    model.train()
    for images, labels in train_loader:
        optimizer.zero_grad()
        loss = F.nll_loss(model(images), labels)
        loss.backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in test_loader:
            correct += (model(images).argmax(1) == labels).sum().item()
    return time.perf_counter() - start, 100.0 * correct / len(test_loader.dataset)


def ours_epoch(norm, data):
    _, history = utils.run(norm, epochs=1, data=data, progress=False)
    return history["seconds"][0], history["test_accuracy"][0]


def timing_setup(norm, data, epochs=1, steps_per_epoch=None):
    """What the timing functions below train: utils.setup() of the variant's default RunConfig
    (the model, optimizer, schedule and train step of utils.run) for `epochs` epochs of `data`
    (or of steps_per_epoch batches)."""
    config = utils.RunConfig(norm=norm, epochs=epochs)
    steps = steps_per_epoch or math.ceil(len(data[0]) / config.batch_size)
    return config, utils.setup(config, data[0].device, steps)


def compiled_epochs(norm, data, epochs):
    """Seconds of `epochs` epochs (train + test) of a torch.compile'd Net, the first one
    including the compilation."""
    train_x, train_y, test_x, test_y = data
    config, training = timing_setup(norm, data, epochs)
    compiled = torch.compile(training.model)

    def step(images, labels):
        return utils.train_step(compiled, images, labels, training.optimizer, config)

    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        utils.train_epoch(compiled, train_x, train_y, step, training.scheduler, config, training.generator)
        utils.evaluate(compiled, test_x, test_y, config.eval_batch_size)
        seconds.append(time.perf_counter() - start)
    return seconds


def data_pipeline_epoch(root, batch_size=128, workers=2):
    """The reference's DataLoaders iterated once (train + test) with no model; seconds."""
    train_loader, test_loader = reference_loaders(root, batch_size, workers)
    start = time.perf_counter()
    for loader in (train_loader, test_loader):
        for _ in loader:
            pass
    return time.perf_counter() - start


def network_epoch(norm, data, batch_size, bf16=False):
    """Seconds of the network's own work in one epoch: len(train_x) / batch_size calls of
    utils.train_step (forward, loss, backward, AdamW step) on one fixed batch, then the test
    forward passes; bf16=True runs the training forward passes under bf16 autocast."""
    train_x, train_y, test_x, test_y = data
    config, training = timing_setup(norm, data)
    config = dataclasses.replace(config, batch_size=batch_size, precision="bf16" if bf16 else "fp32")
    images, labels = train_x[:batch_size], train_y[:batch_size]
    training.model.train()
    start = time.perf_counter()
    for _ in range(0, len(train_x), batch_size):
        utils.train_step(training.model, images, labels, training.optimizer, config)
    utils.evaluate(training.model, test_x, test_y, config.eval_batch_size)
    return time.perf_counter() - start


def profile_table(norm, data, batches=40, rows=12):
    """torch.profiler table (by self CPU time) of `batches` batches of utils.train_epoch."""
    from torch.profiler import ProfilerActivity, profile

    train_x, train_y, _, _ = data
    config, training = timing_setup(norm, data, steps_per_epoch=10 + batches)
    n = batches * config.batch_size

    def train(count):
        utils.train_epoch(training.model, train_x[:count], train_y[:count], training.step,
                          training.scheduler, config, training.generator)

    train(10 * config.batch_size)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if train_x.is_cuda else [])
    with profile(activities=activities) as trace:
        train(n)
    return trace.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def notebook_seconds(**parameters):
    """Run the notebook's code cells in this process, top to bottom, with `parameters` set
    after its parameters cell (as papermill does); returns the seconds. No Jupyter needed, so
    it runs on a GPU machine without it; IPython magics are skipped (and IPython's import, where it is missing). Images and finished runs
    go to temporary folders, so the committed ones are untouched and every run trains."""
    import importlib.util

    # A bare machine has no IPython: skip the notebook's import of it and give Markdown(...) a
    # stand-in (a fake IPython module would mislead matplotlib, which asks IPython about itself).
    bare = importlib.util.find_spec("IPython") is None
    skipped = ("%", "from IPython") if bare else ("%",)
    os.environ.setdefault("MPLBACKEND", "Agg")
    with open(os.path.join(ROOT, "S6_Normalization.ipynb"), encoding="utf-8") as f:
        cells = [c for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    with tempfile.TemporaryDirectory() as folder:
        parameters = {"IMAGES_DIR": os.path.join(folder, "images"), "RUNS_DIR": os.path.join(folder, "runs"),
                      "DATA_DIR": os.path.join(ROOT, "data"), **parameters}
        namespace, cwd = {"__name__": "notebook", **({"Markdown": str} if bare else {})}, os.getcwd()
        os.chdir(ROOT)
        try:
            start = time.perf_counter()
            for cell in cells:
                source = "".join(cell["source"])
                exec("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(skipped)), namespace)
                if "parameters" in cell["metadata"].get("tags", []):
                    namespace.update(parameters)
            return time.perf_counter() - start
        finally:
            os.chdir(cwd)


def short_commit(info):
    """run_info's commit with the hash cut to 7 digits and what follows it (uncommitted changes, say) kept."""
    commit = info["git_commit"]
    return commit[:7] + commit[40:]


def gpu_report(args):
    """--gpu: eager against the CUDA-graph path per epoch, the whole notebook, and the
    3 variants x 10 seeds x 20 epochs sweep, on this machine's GPU."""
    if not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA GPU; none is visible to torch here")
    device = torch.device("cuda")
    mps = subprocess.run(["pgrep", "-f", "nvidia-cuda-mps"], capture_output=True).returncode == 0
    print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA MPS "
          f"{'running' if mps else 'not running'}; code at commit {short_commit(report.run_info(device))}")
    data = utils.load_tensors(args.root, device)
    for norm in "BLG":
        seconds = {}
        for graph in (False, True):
            _, history = utils.run(norm, epochs=1 + args.repeats, data=data, device=device, progress=False,
                                   cuda_graph=graph, clean_epochs=0)  # every timed epoch augmented
            seconds[graph] = statistics.median(history["seconds"][1:])  # epoch 1 warms up (and captures)
        print(f"{norm}: one epoch eager {seconds[False]:.3f} s, CUDA graph {seconds[True]:.3f} s: "
              f"{seconds[False] / seconds[True]:.1f}x")
    print(f"whole notebook (3 variants x 20 epochs, figures included, in-process): "
          f"{notebook_seconds(DEVICE='cuda'):.1f} s")
    for graph in (True, False) if args.gpu_accuracy else (True,):
        runs = [dict(norm=norm, seed=seed) for norm in "BLG" for seed in range(1, 11)]
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            histories = utils.sweep(runs, workers=args.workers, results_dir=folder, device=device,
                                    progress=False, cuda_graph=graph)
            seconds = time.perf_counter() - start
        means = {norm: statistics.mean(h["test_accuracy"][-1] for r, h in zip(runs, histories) if r["norm"] == norm)
                 for norm in "BLG"}
        print(f"sweep of 3 variants x 10 seeds x 20 epochs ({'CUDA graph' if graph else 'eager'}): {seconds:.1f} s; "
              "mean final test accuracy " + ", ".join(f"{n} {m:.2f}%" for n, m in means.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--norm", default="B", help="variant for the one-epoch comparison (default B)")
    parser.add_argument("--root", default=os.path.join(ROOT, "data"), help="MNIST root folder")
    parser.add_argument("--skip-notebook", action="store_true", help="skip the whole-notebook timing")
    parser.add_argument("--compile", action="store_true",
                        help="also time a torch.compile'd Net (first epoch includes compiling)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also time the reference's data pipeline alone and the network alone")
    parser.add_argument("--ceiling-batch-sizes", type=int, nargs="+", default=[128], metavar="N",
                        help="batch sizes for the network-alone timing (default 128)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler table of 40 training batches of ours")
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per loop (the median is reported)")
    parser.add_argument("--gpu", action="store_true",
                        help="GPU figures instead: eager vs CUDA graph per epoch, the notebook, a 30-run sweep")
    parser.add_argument("--gpu-accuracy", action="store_true",
                        help="with --gpu: also the 30-run sweep eagerly, to compare the two paths' accuracy")
    parser.add_argument("--workers", type=int, default=None, help="with --gpu: sweep worker processes")
    args = parser.parse_args()
    if args.repeats < 1 or min(args.ceiling_batch_sizes) < 1:
        parser.error("--repeats and --ceiling-batch-sizes take positive integers")
    if args.gpu:
        return gpu_report(args)

    device = utils.resolve_device(None)
    data = utils.load_tensors(args.root, device)
    info = report.run_info(device)
    print(f"machine: {info['device']}, torch {info['torch']}, {info['threads']} threads, device {device}; "
          f"code at commit {short_commit(info)}; command: python benchmarks/speed.py {' '.join(sys.argv[1:])}")
    ours_epoch(args.norm, data)  # warm-up: first-call allocations and kernel selection
    images = 70_000
    medians = {}
    for name, measure in (("reference (textbook loop, CPU)", lambda: reference_epoch(args.norm, args.root)),
                          (f"ours (utils.run, {device})", lambda: ours_epoch(args.norm, data))):
        runs = [measure() for _ in range(args.repeats)]
        seconds = sorted(s for s, _ in runs)
        medians[name] = statistics.median(seconds)
        print(f"{name:32s} median {medians[name]:6.2f} s/epoch ({images / medians[name]:6.0f} images/s), "
              f"min {seconds[0]:.2f} s, max {seconds[-1]:.2f} s over {args.repeats} epochs; "
              f"test accuracy after 1 epoch {runs[0][1]:.2f}%")
    reference_seconds, ours_seconds = medians.values()
    print(f"speed-up (ratio of medians): {reference_seconds / ours_seconds:.2f}x")
    if args.ceiling:
        data_seconds = statistics.median(data_pipeline_epoch(args.root) for _ in range(args.repeats))
        print(f"reference data pipeline alone (DataLoader, no model): median {data_seconds:.2f} s/epoch")
        for batch_size in args.ceiling_batch_sizes:
            for bf16 in (False, True):
                alone = statistics.median(network_epoch(args.norm, data, batch_size, bf16)
                                          for _ in range(args.repeats))
                print(f"network alone, batch {batch_size:4d}, {'bf16 autocast' if bf16 else 'fp32':13s}: "
                      f"median {alone:.2f} s/epoch; ceiling for any data pipeline: "
                      f"{reference_seconds / alone:.2f}x the reference")
    if args.profile:
        print(f"profile of 40 batches of utils.train_epoch ({args.norm}, fp32), by self CPU time:")
        print(profile_table(args.norm, data))
    if args.compile:
        # A cold compile cache, as on a user's first run (a warm one compiles several times faster).
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cache-")
        first, *rest = compiled_epochs(args.norm, data, 1 + args.repeats)
        steady = statistics.median(rest)
        saved = ours_seconds - steady
        payback = (f"pays back its compile after {(first - steady) / saved:.0f} epochs" if saved > 0
                   else "never pays back (no time saved per epoch)")
        print(f"torch.compile: first epoch {first:.1f} s (includes compiling), then median {steady:.2f} "
              f"s/epoch against {ours_seconds:.2f} s uncompiled; {payback}")
    if not args.skip_notebook:
        print(f"whole notebook (3 variants x 20 epochs, figures included, in-process): "
              f"{notebook_seconds(DEVICE='cpu'):.0f} s")


if __name__ == "__main__":
    main()
