"""studies/stats.py's statistics; every table agreeing with its results, every document with its tables; splicing."""

import dataclasses
import json
import math
import os
import re
import shutil

import pytest

import report
import utils
from studies import seeds, shift, stats

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


def test_holm_adjusts_in_order_and_stays_monotone():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_a_confidence_interval_of_one_seed_is_refused():
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.describe([99.5])
    with pytest.raises(ValueError, match="at least 2 values"):
        stats.paired([99.5], [99.4])


def test_verdict_follows_the_confidence_interval():
    assert [stats.verdict(ci) for ci in ([0.1, 0.3], [-0.3, -0.1], [-0.1, 0.2])] == ["higher", "lower", "within noise"]


def test_every_table_agrees_with_its_results_and_every_document_with_its_tables():
    tables = report.make_tables()
    assert {"Images/tables/headline.md", "Images/tables/comparisons.md", "Images/notebook/results.md"} <= set(tables)
    assert report.stale(tables) == [], "run python report.py"
    for document in report.DOCUMENTS:
        with open(os.path.join(ROOT, document), encoding="utf-8") as f:
            assert report.MARKER.search(f.read()), f"{document} has no spliced sections"


def test_a_table_is_made_from_its_own_results(tmp_path):
    shutil.copytree(os.path.join(ROOT, "Images"), tmp_path / "Images")
    images = tmp_path / "Images"
    before = seeds.tables(str(images))
    summary = json.loads((images / "summary.json").read_text())
    summary["G"]["final_test_accuracy_per_seed"] = [v - 1 for v in summary["G"]["final_test_accuracy_per_seed"]]
    (images / "summary.json").write_text(json.dumps(summary))
    after = seeds.tables(str(images))
    mean = sum(summary["G"]["final_test_accuracy_per_seed"]) / len(summary["G"]["final_test_accuracy_per_seed"])
    assert f"**{mean:.2f}%**" in after["headline.md"] and after["headline.md"] != before["headline.md"]
    assert after["comparisons.md"].count("GroupNorm higher") == 0 and "BatchNorm higher" in after["comparisons.md"]
    rows = (images / "shift.csv").read_text().splitlines()
    assert rows[0] == "norm,seed,corruption,severity,test_accuracy"
    kept = [r for r in rows if not r.startswith("L,")]  # a study without LayerNorm: its rows and columns go
    (images / "shift.csv").write_text("\n".join(kept) + "\n")
    with pytest.raises((ValueError, KeyError, IndexError)):
        shift.tables(str(images))


def test_the_notebook_table_says_how_many_runs_it_trained_and_where_the_rest_came_from():
    summary = json.loads(open(os.path.join(ROOT, "Images", "notebook", "summary.json"), encoding="utf-8").read())
    parameters = summary["run"]["parameters"]
    parameters.update(runs=3, trained_runs=3, runs_dir="runs")
    assert "in 200 s, training its 3 runs.\n" in utils.results_table(summary, 200.0)
    parameters.update(trained_runs=1)
    assert "in 200 s, training 1 of its 3 runs and loading the rest from runs/.\n" in utils.results_table(summary, 200.0)


def test_splicing_puts_each_file_where_its_marker_names_it_and_says_what_is_missing(tmp_path, monkeypatch):
    (tmp_path / "table.md").write_text("| a |\n|---|\n| 1 |\n")
    (tmp_path / "out.txt").write_text("measured 3.2 s\n")
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    text = ("intro\n<!-- begin: table.md -->\nold\n<!-- end: table.md -->\nmiddle\n<!-- begin: out.txt -->\n"
            "<!-- end: out.txt -->\n<!-- begin: Images/tables/batch_size.md -->\nold numbers\n"
            "<!-- end: Images/tables/batch_size.md -->\n<!-- begin: recipe -->\n<!-- end: recipe -->\n")
    rendered = report.render(text, {})
    assert "intro\n<!-- begin: table.md -->\n| a |\n|---|\n| 1 |\n<!-- end: table.md -->\nmiddle" in rendered
    assert "`out.txt`:\n\n```\nmeasured 3.2 s\n```\n<!-- end: out.txt -->" in rendered
    assert "old numbers" not in rendered
    assert "*Not run yet: `python -m studies.batch_size` makes `Images/tables/batch_size.md`.*" in rendered
    assert utils.recipe_markdown() in rendered
    assert report.render(rendered, {}) == rendered  # splicing twice changes nothing
    in_memory = report.render(text, {"table.md": "| b |\n"})  # a table made afresh wins over the file
    assert "| b |" in in_memory and "| a |" not in in_memory


def test_a_figure_section_links_the_figure_from_the_documents_folder_once_it_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", str(tmp_path))
    text = "<!-- begin: Images/adabn.png -->\n<!-- end: Images/adabn.png -->\n"
    assert "*Not run yet: `python -m studies.adabn` makes `Images/adabn.png`.*" in report.render(text, {})
    (tmp_path / "Images").mkdir()
    (tmp_path / "Images" / "adabn.png").write_bytes(b"png")
    assert "](Images/adabn.png)\n" in report.render(text, {}, "README.md")
    assert "](../Images/adabn.png)\n" in report.render(text, {}, "studies/README.md")


def test_every_image_and_file_the_documents_link_exists():
    for document in report.DOCUMENTS:
        with open(os.path.join(ROOT, document), encoding="utf-8") as f:
            links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", f.read())  # images and links, without their anchor
        missing = [link for link in links if not link.startswith("http")
                   and not os.path.exists(os.path.join(ROOT, os.path.dirname(document), link))]
        assert not missing, f"{document} links files that do not exist: {missing}"


def test_readme_leads_with_results_within_its_word_budget():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    assert len(text.split()) <= 1300, "README.md is over 1,300 words: move detail or a table to studies/ or benchmarks/"
    first_table = next(i for i, line in enumerate(lines, 1) if line.startswith("|"))
    first_figure = next(i for i, line in enumerate(lines, 1) if "![" in line and "colab-badge" not in line)
    assert first_table <= 40 and first_figure <= 60


def saved_recipes():
    """(file, the RunConfig fields it was trained with) for the notebook and every study that has run:
    the seeds study's summary.json holds each variant's config; every other study's CSV has a JSON
    beside it with the recipe (None where that JSON is missing)."""
    found = []
    for path in ("Images/summary.json", "Images/notebook/summary.json"):
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            saved = json.load(f)
        found += [(f"{path} ({norm})", dict(saved[norm]["config"], norm=norm)) for norm in "BLG"]
    for study in report.STUDIES:
        if study.RESULTS.endswith(".csv") and os.path.exists(os.path.join(ROOT, "Images", study.RESULTS)):
            path = "Images/" + study.RESULTS.removesuffix(".csv") + ".json"
            if not os.path.exists(os.path.join(ROOT, path)):
                found.append((path, None))
                continue
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                found.append((path, dict(json.load(f)["recipe"], norm="B")))
    return found


@pytest.mark.parametrize("path, trained", saved_recipes(), ids=[path for path, _ in saved_recipes()])
def test_every_committed_study_was_trained_with_the_current_recipe(path, trained):
    assert trained is not None, f"{path} is missing: nothing records what trained the results beside it; rerun the study"
    norm = trained["norm"]
    recipe = {k: v for k, v in dataclasses.asdict(utils.RunConfig(norm=norm)).items() if k != "seed"}
    assert {k: v for k, v in trained.items() if k != "seed"} == recipe, \
        f"{path} was trained with another recipe than RunConfig's defaults: rerun what makes it"
