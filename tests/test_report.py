"""studies/stats.py's statistics, and the documents' generated sections agreeing with the results files."""

import json
import math
import os
import shutil

import pytest

import report
from studies import search, stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_t_quantiles_and_cdf_match_the_tables():
    # Student's t 97.5% points from any printed table
    for df, expected in [(1, 12.706), (2, 4.303), (9, 2.262), (29, 2.045), (1000, 1.962)]:
        assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)
    assert stats.t_cdf(0.0, 5) == pytest.approx(0.5)
    assert stats.t_cdf(-2.262157, 9) == pytest.approx(0.025, abs=1e-6)


def test_describe_and_paired_on_known_numbers():
    described = stats.describe([1.0, 2.0, 3.0, 4.0])
    assert described["mean"] == 2.5 and described["sd"] == pytest.approx(math.sqrt(5 / 3))
    half = stats.t_quantile(0.975, 3) * described["sd"] / 2
    assert described["ci"] == pytest.approx([2.5 - half, 2.5 + half])
    comparison = stats.paired([1, 2, 3, 4.5], [1, 1.5, 2, 3])  # differences 0, .5, 1, 1.5
    assert comparison["mean"] == pytest.approx(0.75)
    assert comparison["t"] == pytest.approx(0.75 / (comparison["sd"] / 2))
    assert comparison["p"] == pytest.approx(0.1027, abs=1e-4)  # paired t-test, 3 degrees of freedom
    assert stats.paired([1, 2, 3], [1, 2, 3])["p"] == 1.0
    assert stats.paired([2, 3, 4], [1, 2, 3])["p"] == 0.0


def test_welch_matches_a_hand_computed_example():
    result = stats.welch([1, 2, 3, 4], [2, 4, 6, 8])  # variances 5/3 and 20/3, 4 values each
    se = math.sqrt(5 / 12 + 20 / 12)
    assert result["mean"] == -2.5
    assert result["df"] == pytest.approx((25 / 12) ** 2 / ((5 / 12) ** 2 / 3 + (20 / 12) ** 2 / 3))  # 4.41
    assert result["ci"][1] - result["mean"] == pytest.approx(stats.t_quantile(0.975, result["df"]) * se)
    assert result["p"] == pytest.approx(2 * (1 - stats.t_cdf(2.5 / se, result["df"])))
    assert 0.14 < result["p"] < 0.16  # t = -1.73 on 4.4 degrees of freedom
    assert stats.welch([1, 2, 3], [1, 2, 3])["p"] == pytest.approx(1.0)


def test_holm_adjusts_in_order_and_stays_monotone():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


@pytest.mark.parametrize("document", report.DOCUMENTS)
def test_documents_agree_with_the_results_files(document):
    with open(os.path.join(ROOT, document), encoding="utf-8") as f:
        text = f.read()
    assert report.MARKER.search(text), f"{document} has no generated sections"
    assert report.stale_sections(text) == [], f"{document} disagrees with the results: run python report.py"


def test_changing_one_accuracy_in_summary_json_makes_the_readme_stale(tmp_path, monkeypatch):
    images = tmp_path / "Images"
    shutil.copytree(os.path.join(ROOT, "Images"), images)
    shutil.copytree(os.path.join(ROOT, "benchmarks"), tmp_path / "benchmarks")
    shutil.copytree(os.path.join(ROOT, "studies"), tmp_path / "studies")
    shutil.copy(os.path.join(ROOT, "S6_Normalization.ipynb"), tmp_path)
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert report.stale_sections(text) == []
    summary = json.loads((images / "summary.json").read_text())
    summary["G"]["final_test_accuracy_per_seed"][0] -= 0.1  # one run's accuracy, one digit off as a typo would
    summary["G"]["final_test_accuracy"] -= 0.01
    (images / "summary.json").write_text(json.dumps(summary))
    assert "headline" in report.stale_sections(text)


def test_a_section_whose_results_are_missing_names_the_command_that_makes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", str(tmp_path))  # an empty checkout: no results at all
    text = report.render("<!-- begin: batch_size -->\nold numbers\n<!-- end: batch_size -->\n")
    assert "old numbers" not in text
    assert "Not run yet: `Images/batch_size.csv` is missing; `python studies/batch_size.py` makes it." in text
    assert report.stale_sections(text) == []


def test_readme_leads_with_results_within_its_word_budget():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    assert len(text.split()) <= 1300, "README.md is over 1,300 words: move detail to studies/ or benchmarks/"
    first_table = next(i for i, line in enumerate(lines, 1) if line.startswith("|"))
    first_figure = next(i for i, line in enumerate(lines, 1) if "![" in line and "colab-badge" not in line)
    assert first_table <= 40 and first_figure <= 60


@pytest.mark.parametrize("summary", ["Images/summary.json", "Images/notebook/summary.json"])
def test_committed_results_were_trained_with_the_current_recipe(summary):
    import dataclasses

    import utils

    with open(os.path.join(ROOT, summary), encoding="utf-8") as f:
        saved = json.load(f)
    for norm in "BLG":
        recipe = dataclasses.asdict(utils.RunConfig(norm=norm))
        trained = report.saved_config(saved[norm]["config"])
        assert {**trained, "seed": None} == {**recipe, "seed": None}, \
            f"{summary} was trained with another recipe than RunConfig's defaults: rerun what makes it"


def test_search_choice_pairs_the_choice_with_the_base_and_a_tried_change_with_its_own_networks():
    rows = []
    for seed, (base, chosen, before, after) in enumerate([(99.30, 99.40, 99.41, 99.51), (99.32, 99.36, 99.36, 99.56),
                                                          (99.34, 99.44, 99.44, 99.74)], start=1):
        rows += [dict(round=1, candidate="base", norm="B", seed=seed, val_accuracy=base),  # older rows: no column
                 dict(round=2, candidate="elastic 20", norm="B", seed=seed, val_accuracy=chosen,
                      val_accuracy_before_precise_bn=""),
                 dict(round=6, candidate=search.CHECK, norm="B", seed=seed, val_accuracy=chosen),
                 dict(round=13, candidate=search.CHOICES[-1][0], norm="B", seed=seed, val_accuracy=chosen + 0.05),
                 dict(round=5, candidate="tried", norm="B", seed=seed, val_accuracy=after,
                      val_accuracy_before_precise_bn=before)]
    text = report.search_choice(rows)
    # chosen − base: +0.10, +0.04, +0.10; tried − the same networks before it: +0.10, +0.20, +0.30
    assert "**Chosen: elastic 20**, paired with *base* over the 3 runs (norm, seed) they share: +0.080 points" in text
    assert f"**Chosen: {search.CHOSEN}**, paired with *{search.CHECK}* over the 3 runs (norm, seed) they share: " \
           "+0.050 points" in text
    assert "**Not adopted: tried** (round 5). Each of its 3 BatchNorm networks" in text
    assert ": +0.200 points (95% CI" in text


def test_a_round_against_a_candidate_is_paired_with_it_by_seed_and_judged_by_its_rule(monkeypatch):
    monkeypatch.setattr(search, "ROUNDS", {7: dict(candidates=["up", "level", "down"], seeds=[1, 2, 3], norms="B",
                                                   against="check")})
    # the check has two more seeds, listed first; seed by seed, "up" is always 0.08-0.12 above it, though
    # its values overlap the check's spread (so only pairing by seed shows it), "down" always below
    check = {5: 99.60, 4: 99.20, 1: 99.30, 2: 99.50, 3: 99.40}
    rows = [dict(round=6, candidate="check", norm="B", seed=seed, val_accuracy=v) for seed, v in check.items()]
    for seed, (up, level, down) in {1: (0.10, 0.05, -0.10), 2: (0.12, -0.05, -0.12), 3: (0.08, 0.0, -0.08)}.items():
        rows += [dict(round=7, candidate=name, norm="B", seed=seed, val_accuracy=check[seed] + delta)
                 for name, delta in (("up", up), ("level", level), ("down", down))]
    text = report.against_text(rows)
    assert "**Met the rule: up** (round 7): +0.100 points of validation accuracy against *check* (round 6), " \
           "paired by norm and seed (3 pairs); 95% CI +0.050 to +0.150" in text
    assert "**Not adopted: level** (round 7): +0.000 points" in text and "includes 0: within noise." in text
    assert "**Not adopted: down** (round 7): −0.100 points" in text and "below 0: lower." in text
    assert report.against_text([r for r in rows if r["round"] == 6]) == ""  # round 7 not run yet
    alone = report.against_text([r for r in rows if r["candidate"] != "check"])
    assert "fewer than 2 runs to pair with check" in alone


def test_a_round_with_its_own_check_pairs_with_it_and_judges_a_rerun_candidate_on_that_round_alone(monkeypatch):
    # round 9 trains its own check (on another machine, say) and reruns round 7's "up" there
    monkeypatch.setattr(search, "ROUNDS", {7: dict(candidates=["up"], seeds=[1, 2, 3], against="check"),
                                           9: dict(candidates=["gpu check", "up"], seeds=[1, 2, 3], against="gpu check")})
    rows = []
    for seed in (1, 2, 3):
        rows += [dict(round=6, candidate="check", norm="B", seed=seed, val_accuracy=99.3 + seed / 10),
                 dict(round=7, candidate="up", norm="B", seed=seed, val_accuracy=99.4 + seed / 10 + seed / 100),
                 dict(round=9, candidate="gpu check", norm="B", seed=seed, val_accuracy=99.5 - seed / 10),
                 dict(round=9, candidate="up", norm="B", seed=seed, val_accuracy=99.4 - seed / 10 - seed / 100)]
    text = report.against_text(rows)
    assert "**Met the rule: up** (round 7): +0.120 points" in text and "against *check* (round 6)" in text
    assert "**Not adopted: up** (round 9): −0.120 points" in text and "against *gpu check* (round 9)" in text
    assert "gpu check** (round 9)" not in text  # the check is not judged against itself


def test_provenance_says_when_a_study_was_loaded_from_runs_rather_than_trained():
    info = dict(device="CPU: test", torch="2.x", git_commit="abcdef0123")
    made = dict(runs=4, sweep_seconds=1.0, command="studies/x.py", mean_run_seconds=90.0)
    assert "in 2.0 min" in report.provenance({**info, "parameters": {**made, "trained_runs": 4, "sweep_seconds": 120.0}}, "Trained by")
    loaded = report.provenance({**info, "parameters": {**made, "trained_runs": 0}}, "Trained by")
    assert loaded.startswith("Tabulated by `studies/x.py` from its 4 cached runs, trained earlier by the same code "
                             "(1.5 min per run on average), on CPU: test")
    partly = report.provenance({**info, "parameters": {**made, "trained_runs": 1, "sweep_seconds": 90.0}}, "Trained by")
    assert "(1 of 4 runs trained in that call, 1.5 min; the rest loaded from earlier calls, 1.5 min per run" in partly


def test_comparisons_add_the_validation_split_of_the_same_recipe_once_it_has_run(tmp_path, monkeypatch):
    shutil.copytree(os.path.join(ROOT, "Images"), tmp_path / "Images")
    shutil.copytree(os.path.join(ROOT, "studies", "previous_recipe"), tmp_path / "studies" / "previous_recipe")
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    header = "round,candidate,norm,seed,val_accuracy\n"
    (tmp_path / "studies" / "search.csv").write_text(header + "1,base,B,1,99.0\n")
    assert "validation split" not in report.section_comparisons()  # the recipe not run on it: no column

    def rows(round_, name, gap):  # G exactly `gap` above B and L on every seed
        return [f"{round_},\"{name}\",{norm},{seed},{99.4 + (gap if norm == 'G' else 0) + seed / 100}"
                for norm in "BLG" for seed in (1, 2, 3)]
    (tmp_path / "studies" / "search.csv").write_text(
        header + "\n".join(rows(6, search.CHECK, 0.2) + rows(13, search.CHOSEN, 0.1)) + "\n")
    text = report.section_comparisons()  # the recipe's headline with the recipe's validation runs
    assert "| validation split (95% CI) |" in text
    assert "| BatchNorm − LayerNorm |" in text and "+0.00 (+0.00 to +0.00) |" in text
    assert "−0.10 (−0.10 to −0.10) |" in text
    assert "[search round 13](studies/README.md#how-the-recipe-was-chosen), 3 seeds): the CI excludes 0 for " \
           "BatchNorm − GroupNorm, LayerNorm − GroupNorm" in text
    table = report.section_validation_table()  # round 6 with the seeds study of the recipe it trained
    assert "| BatchNorm − GroupNorm | −0.20 (−0.20 to −0.20) |" in table and "Welch" in table


def test_validation_table_pairs_the_same_networks_across_the_splits(tmp_path, monkeypatch):
    shutil.copytree(os.path.join(ROOT, "Images"), tmp_path / "Images")
    shutil.copytree(os.path.join(ROOT, "studies", "previous_recipe"), tmp_path / "studies" / "previous_recipe")
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    search_rows, splits = ["round,candidate,norm,seed,val_accuracy"], ["norm,seed,val_accuracy,test_accuracy"]
    for norm in "BLG":
        for seed in (1, 2, 3):
            val = 99.4 + seed / 100
            test = val + (0.1 if norm == "B" else 0.0)  # on the test set B gains 0.1 on every seed
            search_rows.append(f'6,"{search.CHECK}",{norm},{seed},{val}')
            splits.append(f"{norm},{seed},{val},{test}")
    (tmp_path / "studies" / "search.csv").write_text("\n".join(search_rows) + "\n")
    (tmp_path / "Images" / "splits.csv").write_text("\n".join(splits) + "\n")
    (tmp_path / "Images" / "splits.json").write_text(json.dumps(
        dict(parameters=dict(runs=9, trained_runs=0, sweep_seconds=1.0, command="studies/splits.py"),
             device="CPU: test", torch="2.x", git_commit="abcdef0")))
    text = report.section_validation_table()
    assert "| test set, the same networks (`studies/splits.py`) |" in text
    assert "paired by seed: BatchNorm − LayerNorm +0.10 (+0.10 to +0.10); BatchNorm − GroupNorm +0.10" in text
    assert "Tabulated by `studies/splits.py` from its 9 cached runs" in text


def test_run_info_names_the_commit_given_by_source_commit_over_a_copied_git(monkeypatch):
    # a lent machine gets a copy of the tree whose git may be missing or stale: the sender says which commit it is
    monkeypatch.delenv("SOURCE_COMMIT", raising=False)
    assert "SOURCE_COMMIT" not in report.run_info("cpu")["git_commit"]
    monkeypatch.setenv("SOURCE_COMMIT", "0123abc")
    assert report.run_info("cpu")["git_commit"] == "0123abc (given by SOURCE_COMMIT, not checked)"


def test_a_field_added_after_a_result_counts_as_what_runs_did_before_it_not_as_its_default(monkeypatch):
    import dataclasses

    import utils

    saved = {k: v for k, v in dataclasses.asdict(utils.RunConfig(norm="B")).items() if k not in ("norm", "seed")}
    monkeypatch.setattr(report, "read_json", lambda path: {"recipe": saved, "parameters": {}, "device": "CPU",
                                                           "torch": "2", "git_commit": "abc1234"})
    assert report.batch_size_recipe_changes()[1] == []
    del saved["activation"], saved["clean_epochs"]  # saved before they existed: ReLU, every epoch augmented
    assert report.batch_size_recipe_changes()[1] == ["activation", "clean_epochs"]
    saved.update(activation="silu", clean_epochs=3, elastic=0.0)  # a real change is still named
    assert report.batch_size_recipe_changes()[1] == ["elastic"]


def test_a_finalist_is_compared_with_the_recipe_seed_by_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    monkeypatch.setattr(search, "FINALISTS", [])
    assert "No candidate has become a finalist" in report.section_finalists()
    monkeypatch.setattr(search, "FINALISTS", ["wider"])
    assert "scored on the test set: 0. Not yet scored: wider" in report.section_finalists()
    recipe = {n: dict(name=n, params=7850, seeds=[1, 2, 3], final_test_accuracy_per_seed=[99.40, 99.45, 99.50])
              for n in "BLG"}
    finalist = {n: dict(recipe[n], seeds=[3, 2, 1], final_test_accuracy_per_seed=[99.60, 99.50, 99.41])
                for n in "BLG"}  # seed by seed: +0.01, +0.05, +0.10
    finalist["run"] = dict(candidate="wider", device="CPU", torch="2", git_commit="abcdef0123",
                           parameters=dict(command="studies/seeds.py --candidate wider"))
    (tmp_path / "Images").mkdir()
    (tmp_path / "Images" / "summary.json").write_text(json.dumps(recipe))
    (tmp_path / "studies" / "finalists" / "wider").mkdir(parents=True)
    (tmp_path / "studies" / "finalists" / "wider" / "summary.json").write_text(json.dumps(finalist))
    text = report.section_finalists()
    assert "Finalists: 1; scored on the test set: 1." in text and "**wider**" in text
    row = next(line for line in text.splitlines() if line.startswith("| B |"))
    by_seed = report.signed_ci(stats.paired([99.41, 99.50, 99.60], [99.40, 99.45, 99.50]))
    assert "**99.50%**" in row and "| 99.45% |" in row and f"| {by_seed} |" in row and row.endswith("| yes |")
    # once adopted, it is compared with the recipe it replaced (studies/previous_recipe/), not with itself
    (tmp_path / "studies" / "previous_recipe").mkdir()
    before = {n: dict(recipe[n], final_test_accuracy_per_seed=[99.30, 99.35, 99.40]) for n in "BLG"}
    (tmp_path / "studies" / "previous_recipe" / "summary.json").write_text(json.dumps(before))
    assert "| 99.45% |" in report.section_finalists()  # not adopted: today's recipe still
    monkeypatch.setattr(search, "CHOICES", [("elastic 20", "base"), ("wider", search.CHECK)])
    text = report.section_finalists()
    row = next(line for line in text.splitlines() if line.startswith("| B |"))
    assert "| 99.35% |" in row


def test_headline_says_which_variants_meet_the_target_from_their_means(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    (tmp_path / "Images").mkdir()
    run = dict(device="CPU", torch="2", git_commit="abcdef0", parameters=dict(command="studies/seeds.py"))

    def write(scores):
        summary = {n: dict(name=f"norm {n}", params=7850, epochs=20, final_test_loss=0.02, seeds=[1, 2, 3],
                           final_test_accuracy_per_seed=v) for n, v in scores.items()}
        (tmp_path / "Images" / "summary.json").write_text(json.dumps({**summary, "run": run}))
        return report.section_headline()

    assert "at least 99.50%: met by all 3 variants. Trained" in write({n: [99.60, 99.62, 99.64] for n in "BLG"})
    text = write({"B": [99.40, 99.45, 99.50], "L": [99.50, 99.55, 99.60], "G": [99.50, 99.55, 99.60]})
    assert "met by norm L and norm G; missed by norm B" in text


def test_shift_finding_names_only_the_corruptions_where_a_norm_differs(tmp_path, monkeypatch):
    from studies.shift import CORRUPTIONS

    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    (tmp_path / "Images").mkdir()
    lines = ["norm,seed,corruption,severity,test_accuracy"]
    for seed, wobble in ((1, 0.0), (2, 0.3), (3, -0.2)):
        for corruption, severities in CORRUPTIONS.items():
            for severity in severities:
                for norm in ("B", "L"):  # L exactly 5 points higher on noise, equal to B elsewhere
                    gain = 5.0 if norm == "L" and corruption == "noise" else 0.0
                    lines.append(f"{norm},{seed},{corruption},{severity},{90 + wobble + gain}")
    (tmp_path / "Images" / "shift.csv").write_text("\n".join(lines) + "\n")
    text = report.section_shift()
    assert "LayerNorm higher on noise; level elsewhere." in text and "lower" not in text


def test_notebook_discussion_says_what_the_last_epoch_trained_on(tmp_path):
    images = tmp_path / "notebook"
    shutil.copytree(os.path.join(ROOT, "Images", "notebook"), images)
    assert "the last 3 epochs are unaugmented" in report.notebook_discussion(str(images))
    summary = json.loads((images / "summary.json").read_text())
    for norm in "BLG":
        del summary[norm]["config"]["clean_epochs"]  # saved before the field existed: every epoch augmented
    (images / "summary.json").write_text(json.dumps(summary))
    assert "the training accuracy on augmented batches is within" in report.notebook_discussion(str(images))
