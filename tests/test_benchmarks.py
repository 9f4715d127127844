"""The benchmarks on tiny data: their timing functions run against the current code and their
arguments are checked. (Times are printed by the benchmarks, never asserted here.)"""

import sys

import pytest

from benchmarks import speed


@pytest.mark.parametrize("kind", ["reference", "ours"])
def test_an_epoch_of_each_kind_trains_and_scores_on_tiny_mnist(tiny_mnist_root, kind):
    seconds, accuracy = (speed.reference_epoch if kind == "reference" else speed.ours_epoch)("B", str(tiny_mnist_root))
    assert seconds > 0 and 0 <= accuracy <= 100


def test_a_count_below_one_is_rejected_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["speed.py", "--repeats", "0"])
    with pytest.raises(SystemExit) as error:
        speed.main()
    assert error.value.code == 2 and "--repeats 0" in capsys.readouterr().err
