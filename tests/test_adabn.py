"""The AdaBN study's pieces on tiny inputs: its draws, the adaptation, the cache and the tables."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import files  # noqa: E402
import sweeps  # noqa: E402
from model import Net, state_digest  # noqa: E402
from studies import adabn, common, shift  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_the_plan_caps_n_at_the_set_and_the_draws_are_fixed_subsets_of_size_n():
    assert adabn.plan(10000) == [(0, 1), *adabn.DRAWS.items(), (10000, 1)]
    assert adabn.plan(50) == [(0, 1), *((n, k) for n, k in adabn.DRAWS.items() if n < 50), (50, 1)]
    for n, draws in adabn.plan(50)[1:]:
        chosen = [adabn.draw(n, number, 50) for number in range(draws)]
        for number, indices in enumerate(chosen):
            assert torch.equal(indices, adabn.draw(n, number, 50)) and len(indices) == n
            assert len(set(indices.tolist())) == n and 0 <= indices.min() and indices.max() < 50
    for n, draws in adabn.plan(10000)[1:-1]:
        assert len({tuple(adabn.draw(n, number, 10000).tolist()) for number in range(draws)}) == draws  # they differ
    assert torch.equal(adabn.draw(50, 0, 50), torch.arange(50))


@pytest.mark.parametrize("n", [1, 4])
def test_adapting_on_n_images_changes_only_batchnorm_statistics_and_not_the_model(n):
    torch.manual_seed(0)
    model = Net("B").eval()
    digest, before = state_digest(model.state_dict()), {k: v.clone() for k, v in model.state_dict().items()}
    shapes = []  # every BatchNorm sees more than one value per channel, even from one image
    hooks = [m.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape))
             for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    adapted = adabn.adapt(model, torch.randn(30, 1, 28, 28) * 2 + 1, n, 0)
    [hook.remove() for hook in hooks]
    assert min(s[0] * s[2] * s[3] for s in shapes) >= 9 * n and shapes[0][0] == n
    assert state_digest(model.state_dict()) == digest and not adapted.training
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert {k for k in before if k.endswith(("running_mean", "running_var"))} <= changed
    assert adabn.adapt(model, torch.zeros(3, 1, 28, 28), 0, 0) is model


def test_scores_are_kept_per_model_and_read_back_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(shift, "CORRUPTIONS", {"none": [0], "noise": [0.3]})
    monkeypatch.setattr(adabn, "DRAWS", {1: 2, 4: 1})
    torch.manual_seed(0)
    models = {1: Net("B").eval(), 2: Net("B").eval()}
    x, y = torch.rand(20, 1, 28, 28), torch.randint(0, 10, (20,))
    scored, real_score = [], adabn.score
    monkeypatch.setattr(adabn, "score", lambda seed, *a: scored.append(seed) or real_score(seed, *a))
    first = adabn.score_cached(models, x, y, str(tmp_path))
    assert first == [row for seed, model in models.items() for row in real_score(seed, model, x, y)]
    assert len(first) == 2 * 2 * (1 + 2 + 1 + 1) and all(sweeps.RECORD.fullmatch(p.name) for p in tmp_path.iterdir())
    whole = {(r[0], r[1], r[2]): r[5] for r in first if r[3] == len(x)}  # all images: the shift study's AdaBN
    assert whole == {(s, c, v): a for m, s, c, v, a in shift.score({("B", s): m for s, m in models.items()}, x, y)
                     if m == "B+AdaBN"}
    assert adabn.score_cached(models, x, y, str(tmp_path)) == first and scored == [1, 2]
    with torch.no_grad():
        next(models[2].parameters()).add_(1.0)  # other weights: scored anew, seed 2 alone
    adabn.score_cached(models, x, y, str(tmp_path))
    assert scored == [1, 2, 2]


def fake_results(folder, seeds=(1, 2, 3, 4)):
    """adabn.csv and shift.csv in which AdaBN is 10 points below LayerNorm with one image,
    level with it (±1 by seed) with four, and 5 above from 16; GroupNorm is LayerNorm + 20."""
    accuracy = {0: lambda s: 50.0, 1: lambda s: 80 + s / 10, 4: lambda s: 90 + s / 10 + (1 if s % 2 else -1)}
    rows = [[s, c, v, n, d, accuracy.get(n, lambda s: 95 + s / 10)(s)] for s in seeds
            for c, vs in shift.CORRUPTIONS.items() for v in vs for n, k in adabn.plan(10000) for d in range(k)]
    files.write_csv(str(folder / "adabn.csv"), adabn.COLUMNS, rows)
    others = [[m, s, c, v, 90 + s / 10 + (20 if m == "G" else 0)] for m in shift.MODELS for s in seeds
              for c, vs in shift.CORRUPTIONS.items() for v in vs]
    files.write_csv(str(folder / "shift.csv"), shift.COLUMNS, others)
    files.write_json(str(folder / "adabn.json"), files.run_info("cpu", command="test", runs=4, trained_runs=0,
                                                                 sweep_seconds=1, mean_run_seconds=60))


def test_the_tables_put_each_verdict_where_its_ci_lies(tmp_path):
    fake_results(tmp_path)
    tables = adabn.tables(str(tmp_path))
    assert set(tables) == set(adabn.TABLE_NAMES)
    lines = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in tables["adabn.md"].splitlines()
             if line.startswith("| ") and "---" not in line}
    verdicts = {n: (cells[4], cells[6].rstrip(" |")) for n, cells in lines.items()}
    assert verdicts["0 (not adapted)"] == ("lower", "lower") and verdicts["1"] == ("lower", "lower")
    assert verdicts["4"] == ("within noise", "lower") and verdicts["16"] == ("higher", "lower")
    assert verdicts["10,000 (all)"] == ("higher", "lower") and lines["1"][1] == str(adabn.DRAWS[1])
    assert lines["64"][1] == str(adabn.DRAWS[64])
    assert lines["1"][3].startswith("−10.00 (−10.00 to −10.00)")
    full = tables["adabn_full.md"]
    assert "| none (clean) | 50.00 | 80.25 |" in full and "**all corrupted sets**" in full
    brief = {line.split(" | ")[0].strip("| "): line.rstrip(" |").split(" | ")[-1] for line in tables["adabn_brief.md"].splitlines()
             if line.startswith("| ") and "---" not in line}
    assert brief["LayerNorm, all corrupted sets"] == "4" and brief["GroupNorm, all corrupted sets"] == "—"
    assert common.catches_up({0: "lower", 1: "within noise", 4: "lower", 16: "higher"}) == "16"
    assert common.catches_up({2: "lower", 4: "lower", 128: "(reference)"}) == "—"  # a reference is no verdict
    assert (common.seed_list([3, 1, 2]), common.seed_list([1, 3, 5]), common.seed_list([1, 2])) == ("1–3", "1, 3, 5", "1, 2")


def test_the_figure_draws_a_line_per_corruption_and_the_references(tmp_path):
    fake_results(tmp_path)
    adabn.redraw(str(tmp_path))
    assert (tmp_path / "adabn.png").stat().st_size > 0 and (tmp_path / "tables" / "adabn.md").exists()
    rows, others = (files.read_csv(str(tmp_path / name)) for name in ("adabn.csv", "shift.csv"))
    ax = adabn.plot(rows, others).axes[0]
    assert ax.get_xscale() == "log" and len(ax.lines) == len(shift.CORRUPTIONS) - 1 + 1 + 3
