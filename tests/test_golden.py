"""The golden runs: tiny CPU runs of B, L and G with today's recipe (elastic distortion, the last of 7
epochs unaugmented by the default rule, L1 for BatchNorm), and of B with the batch-size study's ghost
batches (ghost.py), compared with the histories stored in golden.json. A run's cache key
holds utils.TRAINING_VERSION instead of the source text, so this is what says when the computation
changed: then this test fails until the version is bumped and the file regenerated,

    python tests/test_golden.py --write      # refuses while TRAINING_VERSION is the stored one

The tolerance survives another CPU model (whose float kernels differ in the last bits: seen as 1e-5
relative after an epoch of MNIST between an Intel Xeon and an AMD EPYC) but not a change of what is
computed (a changed default moves these losses by 1e-2 or more).
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # also when run as a script

import torch  # noqa: E402

import data  # noqa: E402
import files  # noqa: E402
import utils  # noqa: E402

GOLDEN = os.path.join(ROOT, "tests", "golden.json")
RELATIVE = 1e-3  # on losses and learning rates
SETTINGS = dict(epochs=7, batch_size=32, eval_batch_size=64, progress=False)  # clean_epochs by its rule: 1 of 7
IMAGES = {"train": 128, "test": 64}
RUNS = {"B": dict(norm="B"), "L": dict(norm="L"), "G": dict(norm="G"), "B, ghost batches of 8": dict(norm="B", norm_batch=8)}


def golden_runs():
    """{name: history without seconds} of the tiny RUNS, on one CPU thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny = data.synthetic(IMAGES["train"], IMAGES["test"])
        return {name: {k: v for k, v in utils.run(**run, data=tiny, device="cpu", **SETTINGS)[1].items() if k != "seconds"}
                for name, run in RUNS.items()}
    finally:
        torch.set_num_threads(threads)


def differences(stored, now, images):
    """[what differs beyond the tolerance]: losses and lr relatively, accuracies by more than one image."""
    found = []
    if set(stored) != set(now) or any(set(stored[n]) != set(now[n]) for n in stored):
        return ["the stored runs or their history keys differ from today's"]
    for norm, history in stored.items():
        for key, values in history.items():
            if len(values) != len(now[norm][key]):
                found.append(f"{norm} {key}: {len(values)} epochs stored, {len(now[norm][key])} now")
                continue
            for epoch, (a, b) in enumerate(zip(values, now[norm][key]), start=1):
                one_image = 100 / images["train" if key == "train_accuracy" else "test"]
                close = abs(a - b) <= one_image + 1e-9 if key.endswith("accuracy") else abs(a - b) <= RELATIVE * abs(a)
                if not close:
                    found.append(f"{norm} {key} epoch {epoch}: stored {a:.6g}, now {b:.6g}")
    return found


def test_the_golden_runs_compute_what_they_computed_at_this_training_version():
    with open(GOLDEN, encoding="utf-8") as f:
        golden = json.load(f)
    assert golden["training_version"] == utils.TRAINING_VERSION, \
        "utils.TRAINING_VERSION changed: regenerate with python tests/test_golden.py --write"
    found = differences(golden["runs"], golden_runs(), golden["images"])
    assert not found, ("what a run computes changed; bump utils.TRAINING_VERSION and run python tests/test_golden.py "
                       "--write:\n  " + "\n  ".join(found[:10]))


def write():
    now = golden_runs()
    if os.path.exists(GOLDEN):
        with open(GOLDEN, encoding="utf-8") as f:
            stored = json.load(f)
        if stored["training_version"] == utils.TRAINING_VERSION and differences(stored["runs"], now, stored["images"]):
            sys.exit(f"the computation changed but utils.TRAINING_VERSION is still {utils.TRAINING_VERSION}: bump it "
                     "first (every cached run of the old computation is then retrained), then --write again")
    info = files.run_info("cpu")
    files.write_json(GOLDEN, {"training_version": utils.TRAINING_VERSION, "made_by": "python tests/test_golden.py --write",
                              "settings": SETTINGS, "images": IMAGES, "device": info["device"],
                              "torch": info["torch"], "runs": now})
    print(f"wrote {GOLDEN} for training version {utils.TRAINING_VERSION}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
