"""Why do BatchNorm and GroupNorm compare differently on the test set and the validation split?

    python studies/splits.py     # round 6's networks: 50,000 training images, 20 seeds per norm

Search round 6 (studies/search.py) trains the recipe of the time (ReLU, every epoch augmented,
before round 13's finalist was adopted) on the first 50,000 training images and scores the last
10,000: there the norms are level, while that recipe's seeds study (all 60,000 images, scored on
the test set; kept in studies/previous_recipe/) has BatchNorm's mean below GroupNorm's, and the two splits' differences
disagree (studies/README.md has the numbers). The two differ in the images scored and
in the training set's size. This takes round 6's networks (the same runs: from runs/, or trained
here if missing) and scores each on the MNIST test set too, so that every network has both
scores and the comparison between the splits is paired network by network, at one training size.

Writes Images/splits.csv (norm, seed, val_accuracy, test_accuracy: the final epoch's network)
and Images/splits.json (what produced it).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import data  # noqa: E402
import utils  # noqa: E402
from model import NORMS  # noqa: E402
from studies import common, search  # noqa: E402

COLUMNS = ["norm", "seed", "val_accuracy", "test_accuracy"]


def main():
    args = common.parser(__doc__, seeds=list(range(1, 21))).parse_args()
    runs = [dict(norm=norm, seed=seed, validation=True, **search.CANDIDATES[search.CHECK])
            for norm in NORMS for seed in args.seeds]  # round 6's runs
    pairs, _, info = common.sweep(runs, args)
    device = utils.resolve_device(args.device)
    _, _, test_x, test_y = data.load_tensors(os.path.join(common.ROOT, "data"), device, test_limit=args.test_limit)
    rows = [[run["norm"], run["seed"], history["test_accuracy"][-1], utils.evaluate(model.to(device), test_x, test_y)[1]]
            for run, (model, history) in zip(runs, pairs)]  # history's "test" is the validation split here
    common.write_csv(os.path.join(args.images, "splits.csv"), COLUMNS, rows)
    common.write_json(os.path.join(args.images, "splits.json"), info)
    print(f"wrote splits.csv and splits.json in {args.images}")


if __name__ == "__main__":
    main()
