"""The studies' pieces on tiny inputs: run plans, corruptions, AdaBN, and their figures."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import files  # noqa: E402
import utils  # noqa: E402
from model import Net  # noqa: E402
from studies import batch_size, seeds, shift  # noqa: E402

LABELS = {"B": "BatchNorm", "L": "LayerNorm", "G": "GroupNorm"}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_batch_size_plan_isolates_the_normalization_batch():
    plan = batch_size.plan([1, 2], real_seeds=[1])
    ghost = [(k, run) for kind, k, run in plan if kind == "ghost"]
    assert sorted({k for k, _ in ghost}) == batch_size.GHOST_SIZES
    for k, run in ghost:  # only BatchNorm below the optimizer batch gets ghost batches; the others run at 128
        assert run.get("norm_batch") == (k if k < 128 else None) and (run["norm"] == "B" or k == 128)
        assert "batch_size" not in run
    assert sum(k == 128 for k, _ in ghost) == 2 * 3  # the seeds study's runs of every norm
    real = [run for kind, _, run in plan if kind == "real"]
    assert {(r["batch_size"], r["max_lr"]) for r in real} == {(16, 0.003536), (32, 0.005)} and len(real) == 2 * 3
    utils.RunConfig.build(**plan[0][2])  # every planned run is a valid configuration


def test_ghost_batch_norm_normalizes_each_group_of_images_by_itself():
    layer = utils.RunConfig(norm="B", norm_batch=4).net().features[1][1]
    x = torch.randn(10, 14, 5, 5) * 3 + 1  # groups of 4, 4 and 2 images
    y = layer.train()(x)
    for start, end in ((0, 4), (4, 8), (8, 10)):
        group = y[start:end]
        assert torch.allclose(group.mean(dim=(0, 2, 3)), torch.zeros(14), atol=1e-5)
        assert torch.allclose(group.var(dim=(0, 2, 3), unbiased=False), torch.ones(14), atol=1e-3)
    reference = torch.nn.BatchNorm2d(14).train()
    assert torch.allclose(utils.RunConfig(norm="B", norm_batch=16).net().features[1][1].train()(x), reference(x),
                          atol=1e-5)


@pytest.mark.parametrize("corruption", list(shift.CORRUPTIONS))
def test_corruptions_are_deterministic_and_keep_pixels_in_range(corruption):
    x = torch.rand(6, 1, 28, 28)
    for severity in shift.CORRUPTIONS[corruption]:
        first, second = shift.corrupt(x, corruption, severity), shift.corrupt(x, corruption, severity)
        assert torch.equal(first, second) and first.shape == x.shape
        assert first.min() >= 0 and first.max() <= 1 + 1e-6
        assert torch.equal(first, x) == (corruption == "none")


def test_rotation_by_90_degrees_and_inversion_do_what_they_say():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 2:6, 10:18] = 1.0  # a bar near the top
    assert torch.equal(shift.corrupt(x, "invert", 1), 1 - x)
    turned = shift.corrupt(x, "rotation", 90)
    assert turned[0, 0, :, :8].sum() > 20 or turned[0, 0, :, 20:].sum() > 20  # now at a side


def test_adabn_recomputes_batchnorm_statistics_on_the_new_images_only():
    torch.manual_seed(0)
    model = Net("B").eval()
    x = torch.randn(50, 1, 28, 28) * 2 + 1
    adapted = shift.adapt_batchnorm(model, x, batch_size=20)
    first = next(m for m in adapted.modules() if isinstance(m, torch.nn.BatchNorm2d))
    original = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(first.running_mean, original.running_mean)
    assert torch.equal(original.running_mean, torch.zeros(14))  # the model itself is untouched
    assert not adapted.training


def test_shift_scores_are_kept_per_model_and_read_back_in_order(tmp_path, monkeypatch):
    torch.manual_seed(0)
    models = {(norm, 1): Net(norm).eval() for norm in "BG"}
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    scored = []
    real_score = shift.score
    monkeypatch.setattr(shift, "score", lambda m, *a: scored.append(sorted(m)) or real_score(m, *a))
    first = shift.score_cached(models, x, y, str(tmp_path))
    assert first == real_score(models, x, y)  # the same rows, in score()'s order
    assert shift.score_cached(models, x, y, str(tmp_path)) == first
    assert scored == [[("B", 1), ("G", 1)]]  # the second call scored nothing
    with torch.no_grad():
        next(models[("G", 1)].parameters()).add_(1.0)  # other weights: scored anew, G alone
    shift.score_cached(models, x, y, str(tmp_path))
    assert scored[-1] == [("G", 1)]


def fake_rows():
    rows = []
    for seed in (1, 2, 3):
        for k in batch_size.GHOST_SIZES:
            rows.append(dict(norm="B", norm_batch=k, batch_size=128, max_lr=0.01, kind="ghost", seed=seed,
                             test_accuracy=99.0 + seed / 10 - (0.5 + seed / 100 if k == 2 else 0)))
        for norm in "LG":
            rows.append(dict(norm=norm, norm_batch=128, batch_size=128, max_lr=0.01, kind="ghost", seed=seed,
                             test_accuracy=99.05 + seed / 10 + (seed % 2) / 100))
        for norm in "BLG":
            for size in batch_size.REAL_SIZES:
                rows.append(dict(norm=norm, norm_batch=size, batch_size=size, max_lr=0.005, kind="real",
                                 seed=seed, test_accuracy=98.9 + seed / 7))
    return rows


def test_study_figures_draw_every_variant():
    figure = batch_size.plot(fake_rows(), LABELS)
    assert figure.axes[0].get_xscale() == "log" and len(figure.axes[0].get_legend().get_texts()) == 4
    legend = figure.axes[0].get_legend()
    colours = {text.get_text().split(" ")[0]: matplotlib.colors.to_hex(handle.get_color())
               for text, handle in zip(legend.get_texts(), legend.legend_handles)
               if text.get_text().split(" ")[0] in LABELS.values()}
    assert len(set(colours.values())) == 3, colours  # BatchNorm, LayerNorm and GroupNorm told apart
    real = sorted((line.get_gid(), matplotlib.colors.to_hex(line.get_color())) for line in figure.axes[0].lines
                  if (line.get_gid() or "").startswith("real "))
    assert real == sorted((f"real {norm}", colours[label]) for norm, label in LABELS.items()
                          for _ in batch_size.REAL_SIZES)  # every square in its norm's colour
    shift_rows = [dict(norm=m, seed=s, corruption=c, severity=v, test_accuracy=90.0 + s)
                  for m in shift.MODELS for s in (1, 2) for c, vs in shift.CORRUPTIONS.items() for v in vs]
    figure = shift.plot(shift_rows)
    assert len([ax for ax in figure.axes if ax.lines]) == len(shift.CORRUPTIONS) - 1
    seed_rows = [dict(norm=n, seed=s, final_test_accuracy=99.4 + s / 100) for n in "BLG" for s in (1, 2, 3)]
    figure = seeds.plot_seeds(seed_rows, LABELS)
    assert len(figure.axes[0].collections) >= 3


def test_batch_size_tables_put_each_verdict_where_its_ci_lies(tmp_path):
    rows = fake_rows()
    files.write_csv(str(tmp_path / "batch_size.csv"), batch_size.COLUMNS, [[r[c] for c in batch_size.COLUMNS] for r in rows])
    files.write_json(str(tmp_path / "batch_size.json"), files.run_info("cpu", command="test", runs=1, trained_runs=1,
                                                                        sweep_seconds=60, mean_run_seconds=60))
    tables = batch_size.tables(str(tmp_path))
    lines = {line.split(" | ")[0].strip("| "): line for line in tables["batch_size.md"].splitlines() if line.startswith("| ")}
    assert lines["2"].count("| lower |") == 2  # 0.5 points below its own k=128 and below GroupNorm
    assert "| within noise |" not in lines["2"] and "(reference)" in lines["128"]
    assert "16" in tables["batch_size_real.md"] and "(the recipe)" in tables["batch_size_real.md"]
    own, group = ([cell.strip() for cell in line.strip("|").split("|")] for line in
                  tables["batch_size_brief.md"].splitlines()[2:4])  # the brief table: the full table's verdicts
    for i, k in enumerate(batch_size.GHOST_SIZES, start=1):
        full = [cell.strip() for cell in lines[str(k)].strip("|").split("|")]
        assert (own[i], group[i]) == (full[3] or full[2], full[5])  # k = 128 against itself: "(reference)"
    assert own[-1] == "4" and group[-1] == "—"  # below its own k=128 at k = 2 only; below GroupNorm at every k


def test_a_study_with_its_default_arguments_records_what_produced_it(monkeypatch):
    from studies import common

    history = {key: [1.0] for key in utils.HISTORY_KEYS}
    monkeypatch.setattr(common.sweeps, "sweep", lambda runs, **kwargs: [(Net(r["norm"]), history) for r in runs])
    monkeypatch.setitem(common.sweeps.LAST_SWEEP, "workers", 3)  # as the sweep it stands for would leave it
    monkeypatch.setitem(common.sweeps.LAST_SWEEP, "threads", 1)
    monkeypatch.setattr("sys.argv", ["studies/seeds.py", "--seeds", "1", "2"])
    args = common.parse(common.parser("doc", seeds=[1, 2]))
    assert args.device is None  # the default: CUDA when there is one
    pairs, info = common.sweep([dict(norm="B", seed=1), dict(norm="L", seed=2)], args)
    assert len(pairs) == 2 and info["parameters"]["command"] == "python -m studies.seeds --seeds 1 2"
    assert info["device"].startswith(("CPU", "NVIDIA")) and info["recipe"]["epochs"] == 20
    assert (info["parameters"]["workers"], info["parameters"]["threads_per_worker"]) == (3, 1)


def test_a_claim_needs_two_seeds(monkeypatch, capsys):
    from studies import common

    monkeypatch.setattr("sys.argv", ["studies/seeds.py", "--seeds", "3"])
    with pytest.raises(SystemExit):
        common.parse(common.parser("doc", seeds=[1, 2]))
    assert "at least 2 distinct seeds" in capsys.readouterr().err
