"""Speed of utils.run against the textbook training loop, one epoch each, on real MNIST, on the CPU.

    python -m benchmarks.speed                # 3 repeats of each, every one in a process of its own
    python -m benchmarks.speed --repeats 5

The reference is the textbook loop: torchvision MNIST with per-sample RandomRotation(7), ToTensor and
Normalize in a DataLoader (2 workers, batch 128, shuffled), SGD (lr 0.01, momentum 0.9), fp32, the same
network (model.Net); ours is utils.run with the recipe's defaults (tensors on the device, batched
augmentation with elastic distortion, AdamW, L1 for BatchNorm). Each epoch (60,000 training images and a
test pass over 10,000) runs in a fresh process, the two kinds alternating, so neither inherits the
other's threads or caches; the median is reported because single epochs vary by 20% on a shared
machine. Only ratios from one invocation compare.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import data as mnist
import utils
from files import ROOT, run_info, short_commit
from model import Net


def reference_epoch(norm, root):
    """One textbook epoch (train + test) on the CPU; returns (seconds, test accuracy %)."""
    from torchvision import datasets, transforms

    normalize = transforms.Normalize((mnist.MNIST_MEAN,), (mnist.MNIST_STD,))
    train_set = datasets.MNIST(root, train=True, download=False, transform=transforms.Compose(
        [transforms.RandomRotation((-7.0, 7.0), fill=(0,)), transforms.ToTensor(), normalize]))
    test_set = datasets.MNIST(root, train=False, download=False,
                              transform=transforms.Compose([transforms.ToTensor(), normalize]))
    loader = dict(batch_size=128, num_workers=2)
    train_loader = torch.utils.data.DataLoader(train_set, shuffle=True, **loader)
    test_loader = torch.utils.data.DataLoader(test_set, shuffle=False, **loader)
    torch.manual_seed(1)
    model = Net(norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    model.train()
    for images, labels in train_loader:
        optimizer.zero_grad()
        F.nll_loss(model(images), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(images).argmax(1) == labels).sum().item() for images, labels in test_loader)
    return time.perf_counter() - start, 100.0 * correct / len(test_set)


def ours_epoch(norm, root):
    _, history = utils.run(norm, epochs=1, root=root, device="cpu", progress=False)
    return history["seconds"][0], history["test_accuracy"][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="epochs of each kind, each in its own process")
    parser.add_argument("--norm", default="B", help="the variant timed (default B, with its L1 term)")
    parser.add_argument("--one", choices=["reference", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one epoch in this process, printed as JSON
        root = os.path.join(ROOT, "data")
        mnist.load_mnist(root)  # verified raw files (torchvision reads the same ones)
        seconds, accuracy = (reference_epoch if args.one == "reference" else ours_epoch)(args.norm, root)
        print(json.dumps({"seconds": seconds, "accuracy": accuracy}))
        return
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: time at least one epoch")
    info = run_info("cpu")
    print(f"machine: {info['device']}, torch {info['torch']}, {info['threads']} threads; code at commit "
          f"{short_commit(info['git_commit'])}; command: python -m benchmarks.speed {' '.join(sys.argv[1:])}".rstrip())
    times = {"reference": [], "ours": []}
    for _ in range(args.repeats):
        for kind in times:
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "benchmarks.speed", "--one", kind, "--norm", args.norm],
                                 cwd=ROOT, capture_output=True, text=True, check=True)
            times[kind].append({**json.loads(out.stdout.strip().splitlines()[-1]),
                                "process": time.perf_counter() - start})
    median = {kind: statistics.median(t["seconds"] for t in runs) for kind, runs in times.items()}
    for kind, label in (("reference", "reference (textbook loop)"), ("ours", "ours (utils.run)")):
        seconds = [t["seconds"] for t in times[kind]]
        print(f"{label:26s} median {median[kind]:6.2f} s/epoch ({60000 / median[kind]:6.0f} images/s), min "
              f"{min(seconds):.2f} s, max {max(seconds):.2f} s over {len(seconds)} epochs; whole process median "
              f"{statistics.median(t['process'] for t in times[kind]):.1f} s; test accuracy after 1 epoch "
              f"{times[kind][0]['accuracy']:.2f}%")
    print(f"speed-up (ratio of the median epochs): {median['reference'] / median['ours']:.2f}x")


if __name__ == "__main__":
    main()
