"""What each norm costs at inference, on the CPU: latency at batch 1 on one thread, throughput in bulk on all.

    python -m benchmarks.inference > benchmarks/inference.txt
    python -m benchmarks.inference --quick     # a few calls each: checks that it runs, times nothing

The committed networks (Net.pretrained), BatchNorm also folded into the convolutions before it
(Net.fused()), each eager (under torch.inference_mode) and as TorchScript, timed in rounds that visit
every network and form in turn, so that the drift of a shared machine falls on all of them alike;
only figures from one invocation compare.
"""

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

from config import resolve_device
from files import run_info, short_commit
from model import Net

NETWORKS = {"BatchNorm": ("B", False), "BatchNorm folded": ("B", True), "LayerNorm": ("L", False),
            "GroupNorm": ("G", False)}
WHY = ("# TorchScript (torch.jit.trace, then torch.jit.freeze), the first form tried: it still works on torch 2.14,\n"
       "# which deprecates it (FutureWarning: use torch.compile or torch.export), builds in seconds and runs without\n"
       "# Python (libtorch). Freezing folds BatchNorm into the convolutions by itself, so both BatchNorm rows run the\n"
       "# same graph there. torch.compile also runs here, but builds every network and input shape with a C++\n"
       "# compiler first; ONNX would need onnx and onnxruntime, which are not dependencies of this project.")


def network(norm, fold):
    try:
        net = Net.pretrained(norm)
    except FileNotFoundError:  # no committed weights (yet): the timing is the same
        net = Net(norm).eval()
    return net.fused() if fold else net


def torchscript(net, example):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecation named in WHY
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # GroupNorm's size check, true at any batch
        return torch.jit.freeze(torch.jit.trace(net, example))


@torch.inference_mode()
def measure(models, x, threads, rounds, calls, warmup):
    """{name: [seconds of each call]} of every model (name -> callable) on x: `warmup` calls each, then
    `rounds` rounds of `calls` calls of every model in turn. On a GPU each call is timed to the end of its kernels."""
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for model in models.values():
        for _ in range(warmup):
            model(x)
    seconds = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for _ in range(calls):
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                seconds[name].append(time.perf_counter() - start)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few calls each (a check that it runs)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (benchmarks/gpu.sh)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    # (rounds, calls per round, warm-up calls) at batch 1 and in bulk
    single, bulk = ((2, 5, 3), (1, 2, 1)) if args.quick else ((20, 500, 500), (10, 10, 10))
    bulk_size, threads = 100 if args.quick else 1000, os.cpu_count()
    info = run_info(device)
    generator = torch.Generator().manual_seed(0)
    x1, x_bulk = (torch.randn(n, 1, 28, 28, generator=generator).to(device) for n in (1, bulk_size))
    eager = {name: network(*flags).to(device) for name, flags in NETWORKS.items()}
    start = time.perf_counter()
    scripted = {name: torchscript(net, x1) for name, net in eager.items()}
    build = (time.perf_counter() - start) / len(scripted)
    with torch.inference_mode():  # every form of a network computes the same
        x = x_bulk[:100]
        assert torch.allclose(eager["BatchNorm folded"](x), eager["BatchNorm"](x), atol=1e-4)
        assert all(torch.allclose(scripted[n](x), net(x), atol=1e-4) for n, net in eager.items())
    models = {**{(n, "eager"): m for n, m in eager.items()}, **{(n, "TorchScript"): m for n, m in scripted.items()}}
    previous = torch.get_num_threads()
    latency, throughput = measure(models, x1, 1, *single), measure(models, x_bulk, threads, *bulk)
    torch.set_num_threads(previous)
    print(f"# python -m benchmarks.inference {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"# {info['device']}, torch {info['torch']}; code at commit {short_commit(info['git_commit'])}")
    print(WHY)
    print(f"# latency: batch 1, 1 thread, µs per call: median (10th-90th percentile) of {single[0] * single[1]} "
          f"calls after {single[2]} warm-up calls\n# throughput: batch {bulk_size:,}, {threads} threads, images/s "
          f"from the median of {bulk[0] * bulk[1]} calls; TorchScript built in {build:.1f} s per network")
    print(f"{'':17s} {'latency, eager':>24s} {'latency, TorchScript':>24s} {'images/s, eager':>16s} "
          f"{'images/s, TorchScript':>22s}")
    forms = ("eager", "TorchScript")
    spreads = {}  # µs: median, 10th and 90th percentile
    for key, seconds in latency.items():
        deciles = statistics.quantiles(seconds, n=10)
        spreads[key] = [1e6 * v for v in (statistics.median(seconds), deciles[0], deciles[-1])]
    rates = {key: bulk_size / statistics.median(seconds) for key, seconds in throughput.items()}
    for name in NETWORKS:
        cells = ["{:.0f} ({:.0f}-{:.0f})".format(*spreads[name, form]) for form in forms]
        print(f"{name:17s} {cells[0]:>24s} {cells[1]:>24s} {rates[name, 'eager']:>16,.0f} "
              f"{rates[name, 'TorchScript']:>22,.0f}")

    def ratios(values, form):  # folded BatchNorm's over LayerNorm's, then over GroupNorm's
        return " and ".join(f"{values['BatchNorm folded', form] / values[other, form]:.2f}x"
                            for other in ("LayerNorm", "GroupNorm"))

    medians = {key: values[0] for key, values in spreads.items()}
    print("folded BatchNorm over LayerNorm and over GroupNorm: " + "; ".join(
        f"{form} latency {ratios(medians, form)}, throughput {ratios(rates, form)}" for form in forms))


if __name__ == "__main__":
    main()
