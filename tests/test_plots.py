"""Plotting and results helpers on a tiny saved history, under the Agg backend."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import utils  # noqa: E402
from model import Net  # noqa: E402


def fake_history(epochs=4, offset=0.0):
    return {
        "train_loss": [0.5 / (e + 1) + offset for e in range(epochs)],
        "train_accuracy": [90 + e + offset for e in range(epochs)],
        "test_loss": [0.4 / (e + 1) + offset for e in range(epochs)],
        "test_accuracy": [95 + e - offset for e in range(epochs)],
        "lr": [0.01] * epochs,
        "seconds": [1.5] * epochs,
    }


@pytest.fixture
def histories():
    return {norm: {1: fake_history(), 2: fake_history(offset=0.1)} for norm in "BLG"}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_results_roundtrip_and_final_is_the_last_epoch(tmp_path, histories):
    histories["B"][1]["test_accuracy"] = [95.0, 99.9, 97.0, 98.0]  # best epoch is not the last
    configs = {n: utils.RunConfig(norm=n, epochs=4) for n in "BLG"}
    summary = utils.save_results(histories, configs, {n: 7000 for n in "BLG"}, str(tmp_path), {"commit": "x"})
    assert summary["B"]["final_test_accuracy"] == pytest.approx((98.0 + 97.9) / 2)
    assert summary["B"]["final_test_accuracy_per_seed"] == [98.0, pytest.approx(97.9)]
    assert summary["B"]["params"] == 7000 and summary["B"]["seconds"] == pytest.approx(6.0)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert set(on_disk) == {"B", "L", "G", "run"}
    header = (tmp_path / "history.csv").read_text().splitlines()[0]
    assert header == "norm,seed,epoch,train_loss,train_accuracy,test_loss,test_accuracy,lr,seconds"
    loaded = utils.load_histories(str(tmp_path / "history.csv"))
    assert loaded.keys() == histories.keys()
    assert loaded["B"][1]["test_accuracy"] == [95.0, 99.9, 97.0, 98.0]
    assert summary["B"]["name"] == "BatchNorm + L1 (λ=1e-05)" and summary["B"]["config"]["epochs"] == 4


@pytest.mark.parametrize("plot", [utils.plot_test_loss, utils.plot_test_accuracy])
def test_graphs_show_every_variant_with_bands_for_several_seeds(plot, histories):
    names = {n: utils.RunConfig(norm=n).label for n in "BLG"}
    figure = plot(histories, names)
    assert isinstance(figure, Figure)
    ax = figure.axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert [label.split(",")[0] for label in labels] == list(names.values())
    assert len(ax.collections) == 3  # one ±1 std band per variant
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
    assert "Graph" in ax.get_title()


def test_single_seed_graph_has_no_band(histories):
    figure = utils.plot_test_accuracy({n: {1: h[1]} for n, h in histories.items()})
    assert len(figure.axes[0].collections) == 0
    assert "accuracy" in figure.axes[0].get_ylabel()


def test_curves_show_train_and_test(histories):
    figure = utils.plot_curves(histories["G"][1], "GroupNorm")
    assert len(figure.axes) == 2
    for ax in figure.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "test"]


def test_misclassified_grid_has_10_annotated_tiles_in_5_rows_and_2_columns():
    torch.manual_seed(0)
    model = Net("G")
    x = torch.randn(200, 1, 28, 28)
    y = torch.randint(0, 10, (200,))
    mistakes = utils.find_misclassified(model, x, y)
    assert len(mistakes) == 10
    probabilities = [m["probability"] for m in mistakes]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(m["predicted"] != m["actual"] == y[m["index"]] for m in mistakes)

    figure = utils.plot_misclassified(x[:, 0], mistakes, "GroupNorm (4 groups)")
    tiles = [ax for ax in figure.axes if ax.images]
    assert len(tiles) == 10
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in tiles} == {(5, 2)}
    positions = sorted((ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in tiles)
    assert positions == [(r, c) for r in range(5) for c in range(2)]
    first = tiles[0].get_title()
    assert f"predicted {mistakes[0]['predicted']}" in first and f"actual {mistakes[0]['actual']}" in first
    assert "GroupNorm" in figure._suptitle.get_text()


def test_save_figure_writes_a_png(tmp_path, histories):
    utils.save_figure(utils.plot_test_loss(histories), str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_model_summaries_name_each_norm():
    tables = {norm: utils.model_summary(utils.RunConfig(norm=norm)) for norm in "BLG"}
    assert all("Conv2d" in t and "Total params" in t for t in tables.values())
    assert "LayerNorm" in tables["L"] and "GroupNorm" not in tables["L"]
    assert "GroupNorm" in tables["G"] and "BatchNorm2d" in tables["B"]
