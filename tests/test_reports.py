"""The report, built from the recorded run fixture (tests/fixtures/run_small, a real tiny run)."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import xml.etree.ElementTree as ET
from itertools import combinations
from pathlib import Path

import matplotlib.image
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from bench.cli import main as cli_main
from bench.errors import UserError
from bench.rundir import to_json
from reports import build_report
from reports import figures as F
from reports.build import _views, headline_table
from reports.headline import headlines
from reports.runs import load_run, load_runs
from reports.summary import run_summary

FIXTURE = Path(__file__).parent / "fixtures" / "run_small"
GENERATING = ("toy_sentiment", "toy_toxicity")


def copy_run(tmp: Path, name: str = "run_small") -> Path:
    target = tmp / name
    shutil.copytree(FIXTURE, target)
    return target


def read_cells(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "cells.jsonl").read_text().splitlines()]


def write_cells(run: Path, cells: list[dict]) -> None:
    (run / "cells.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cells))


def mean_over_seeds(cells, task, method, split, strength, metric) -> float:
    """A method's mean over seeds; its strength-0 point is the shared unsteered cell."""
    method = "unsteered" if strength == 0.0 else method
    values = [
        c["metrics"][metric]
        for c in cells
        if (c["task"], c["method"], c["split"], c["strength"]) == (task, method, split, strength)
    ]
    assert values, (task, method, split, strength)
    return statistics.fmean(values)


def row(summary: dict, task: str, method: str, run: int = 0) -> dict:
    return next(
        r for r in summary["runs"][run]["rows"] if (r["task"], r["method"]) == (task, method)
    )


def keep_task(run: Path, task: str) -> Path:
    """Trim a run directory to one suite (a smaller report, for the tests that draw figures)."""
    write_cells(run, [c for c in read_cells(run) if c["task"] == task])
    selection = [s for s in json.loads((run / "selection.json").read_text()) if s["task"] == task]
    (run / "selection.json").write_text(json.dumps(selection))
    (run / "skipped.json").write_text("[]")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["tasks"] = [t for t in manifest["tasks"] if t["name"] == task]
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def summarise(run: Path, budget: float | None = None) -> dict:
    """What summary.json holds for one run, without drawing figures."""
    return {"runs": [to_json(run_summary(load_run(run), budget)[0])]}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    run = copy_run(tmp_path_factory.mktemp("report"))
    return build_report([run])


# ------------------------------------------------------------------------------ outputs


def test_report_writes_markdown_html_summary_and_figures(built):
    out = built.parent
    assert built.name == "report.md" and out.name == "report" and out.parent.name == "run_small"
    for name in ("report.md", "report.html", "summary.json"):
        assert (out / name).stat().st_size > 500, name
    text = built.read_text()
    # Intervals in the table, and what each suite's test split can detect.
    assert "effect (test) [95% CI]" in text and "Δ vs unsteered [CI] p" in text
    powered = [line for line in text.splitlines() if line.startswith("Power: with 4 test examples")]
    assert powered and all("95% intervals are ±" in line for line in powered)
    stems = ["overview"] + [f"{t}_{kind}" for t in GENERATING for kind in ("strength", "fluency")]
    stems.append("toy_preference_strength")
    for stem in stems:
        image = matplotlib.image.imread(out / "figures" / f"{stem}.png")  # (h, w, 4) floats
        assert image.shape[0] > 200 and image.shape[1] > 400, stem
        ink = (image[..., :3].mean(axis=-1) < 0.9).mean()
        assert ink > 0.02, f"{stem}.png is nearly blank ({ink:.1%} non-white)"
        svg = ET.parse(out / "figures" / f"{stem}.svg").getroot()
        assert svg.tag.endswith("svg")
        texts = "".join(svg.itertext())
        assert "on test" in texts or "on select" in texts, stem  # labelled axes, text as text
    # A log-likelihood suite has no fluency figure, and the report says why.
    assert not (out / "figures" / "toy_preference_fluency.png").exists()
    assert "does not generate text" in built.read_text()


def test_markdown_links_every_figure_and_shows_tables(built):
    text = built.read_text()
    links = re.findall(r"\]\((figures/[^)]+)\)", text)
    assert len(links) == 12  # 6 figures, each as PNG (shown) and SVG (linked)
    for link in links:
        assert (built.parent / link).is_file(), link
    assert text.count("| method | strength | gain select → test") == 3
    assert "unsteered (reference)" in text
    assert "skipped prompting on toy_preference" in text
    assert "| prompting | – |" in text and "skipped: prompting needs what" in text
    for fact in ("model fingerprint", "git", "wall time", "seeds", "versions", "scorers"):
        assert fact in text


def test_html_is_one_self_contained_file(built):
    page = (built.parent / "report.html").read_text()
    sources = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(sources) == 6
    for src in sources:
        assert src.startswith("data:image/png;base64,")
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing loaded from elsewhere
    assert "<table>" in page and "Run metadata" in page


def test_summary_numbers_are_the_test_means_at_the_chosen_strength(built):
    summary = json.loads((built.parent / "summary.json").read_text())
    assert (summary["schema"], summary["version"]) == ("steerbench.summary", 1)
    cells = read_cells(FIXTURE)
    selection = json.loads((FIXTURE / "selection.json").read_text())
    run = summary["runs"][0]
    assert len(run["rows"]) == len(selection) == 5  # prompting skipped on toy_preference
    assert run["skipped"][0]["method"] == "prompting"
    for chosen in selection:
        r = row(summary, chosen["task"], chosen["method"])
        assert r["strength"] == chosen["strength"]
        assert math.isclose(r["select_effect"], chosen["effect"])
        primary = r["primary_metric"]
        expected = mean_over_seeds(
            cells, chosen["task"], chosen["method"], "test", chosen["strength"], primary
        )
        assert math.isclose(r["metrics"][primary]["mean"], expected)
        reference = mean_over_seeds(cells, chosen["task"], chosen["method"], "test", 0.0, primary)
        assert math.isclose(r["unsteered"][primary]["mean"], reference)
        assert r["metrics"][primary]["n"] == 2  # two seeds
    sentiment = row(summary, "toy_sentiment", "meandiff")
    assert sentiment["metrics"]["perplexity"]["higher_is_better"] is False
    assert sentiment["metrics"]["positive_rate"]["higher_is_better"] is True
    seconds = [
        c["cost"]["seconds"]
        for c in cells
        if (c["task"], c["method"], c["split"], c["strength"])
        == ("toy_sentiment", "meandiff", "test", sentiment["strength"])
    ]
    base = [
        c["cost"]["seconds"]
        for c in cells
        if (c["task"], c["method"], c["split"], c["strength"])
        == ("toy_sentiment", "unsteered", "test", 0.0)
    ]
    ratio = statistics.fmean(seconds) / statistics.fmean(base)
    assert math.isclose(sentiment["cost"]["seconds_ratio"], ratio)
    assert row(summary, "toy_preference", "meandiff")["metrics"].get("perplexity") is None


# ------------------------------------------------------------------------------ budget


def test_reapplied_fluency_budget_follows_the_runners_rule(tmp_path):
    run = copy_run(tmp_path)
    cells = read_cells(run)
    # The run's own budget, re-applied, reproduces the runner's choices exactly.
    summary = summarise(run, 3.0)
    for chosen in json.loads((run / "selection.json").read_text()):
        assert row(summary, chosen["task"], chosen["method"])["strength"] == chosen["strength"]
    # A loose budget: the best select effect wins whatever its perplexity (ties: smaller).
    summary = summarise(run, 1000)
    assert summary["runs"][0]["fluency_budget"] == 1000
    for task, method, sign in (
        ("toy_toxicity", "prompting", -1),
        ("toy_toxicity", "meandiff", -1),
        ("toy_sentiment", "prompting", 1),
    ):
        r = row(summary, task, method)
        strengths = sorted(
            {0.0} | {c["strength"] for c in cells if (c["task"], c["method"]) == (task, method)}
        )
        effects = {
            s: mean_over_seeds(cells, task, method, "select", s, r["primary_metric"])
            for s in strengths
        }
        best = max(strengths, key=lambda s: (sign * effects[s], -s))
        assert r["strength"] == best, (task, method, effects)
    assert row(summary, "toy_toxicity", "prompting")["strength"] > 0  # the budget mattered
    with pytest.raises(UserError, match="fluency budget"):
        build_report([run], tmp_path / "bad", fluency_budget=0.5)


def test_budget_choice_without_test_cells_is_reported_not_invented(tmp_path):
    run = copy_run(tmp_path)
    chosen = {
        (s["task"], s["method"]): s["strength"]
        for s in json.loads((run / "selection.json").read_text())
    }
    kept = [
        c
        for c in read_cells(run)
        if c["split"] == "select"
        or c["strength"] == 0.0
        or c["strength"] == chosen[(c["task"], c["method"])]
    ]  # what a default run (test_strengths = "chosen") records
    write_cells(run, kept)
    summary = summarise(run, 1000)  # meandiff's most detoxifying strength is far over x3
    r = row(summary, "toy_toxicity", "meandiff")
    assert r["strength"] != chosen[("toy_toxicity", "meandiff")]
    assert r["strength"] > 0 and r["measured_on_test"] is False and r["metrics"] == {}
    assert "no test cells at strength" in r["notes"][0]
    loaded = load_run(run)
    table = headline_table("toy_toxicity", [headlines(loaded, "toy_toxicity", 1000)], [loaded])
    assert "not measured" in table.md(run)


# ------------------------------------------------------------------------------ marking


def test_best_per_suite_must_beat_the_unsteered_model(tmp_path):
    run = copy_run(tmp_path)
    summary = summarise(run)
    # In the recorded run no operating point beats the unsteered model on toy_sentiment's test
    # split: no winner there.
    assert not any(r["best"] for r in summary["runs"][0]["rows"] if r["task"] == "toy_sentiment")
    # Inject a clear improvement for meandiff at its chosen strength on toy_sentiment.
    strength = row(summary, "toy_sentiment", "meandiff")["strength"]
    cells = read_cells(run)
    for c in cells:
        if (c["task"], c["method"], c["split"], c["strength"]) == (
            "toy_sentiment",
            "meandiff",
            "test",
            strength,
        ):
            c["metrics"]["positive_rate"] = 0.75
    write_cells(run, cells)
    summary = summarise(run)
    assert row(summary, "toy_sentiment", "meandiff")["best"] is True
    assert row(summary, "toy_sentiment", "prompting")["best"] is False
    loaded = load_run(run)
    table = headline_table("toy_sentiment", [headlines(loaded, "toy_sentiment")], [loaded])
    assert "| **★ meandiff** |" in table.md(run)
    assert '<tr class="best"><td>★ meandiff</td>' in table.html()


def test_lower_is_better_suites_rank_downwards(tmp_path):
    run = copy_run(tmp_path)
    cells = read_cells(run)
    for c in cells:  # unsteered toxicity 0.5, prompting's chosen point 0.25
        if c["task"] == "toy_toxicity" and c["split"] == "test":
            c["metrics"]["toxicity"] = 0.5 if c["strength"] == 0 else 0.25
    write_cells(run, cells)
    summary = summarise(run)
    # Both methods chose strength 0 for toxicity (nothing reduced it on select): no winner.
    assert not any(r["best"] for r in summary["runs"][0]["rows"] if r["task"] == "toy_toxicity")
    summary = summarise(run, 1000)
    toxicity = {r["method"]: r for r in summary["runs"][0]["rows"] if r["task"] == "toy_toxicity"}
    assert toxicity["prompting"]["metrics"]["toxicity"]["mean"] == 0.25
    # An exact tie: both are marked as tied, neither is "best".
    assert toxicity["prompting"]["tied"] and toxicity["meandiff"]["tied"]
    assert not toxicity["prompting"]["best"] and not toxicity["meandiff"]["best"]


# ------------------------------------------------------------------------------ robustness


def test_degenerate_cells_are_shown_not_crashed_on(tmp_path):
    run = copy_run(tmp_path)
    cells = read_cells(run)
    for c in cells:
        if (c["task"], c["method"], c["split"], c["strength"]) == (
            "toy_sentiment",
            "meandiff",
            "select",
            4.0,
        ):
            c.update(degenerate=True, metrics={}, error="probability tensor contains inf")
    write_cells(run, cells)
    path = build_report([keep_task(run, "toy_sentiment")])
    summary = json.loads((path.parent / "summary.json").read_text())
    assert any("degenerate" in n for n in row(summary, "toy_sentiment", "meandiff")["notes"])
    assert (path.parent / "figures" / "toy_sentiment_fluency.png").is_file()


def test_run_without_manifest_is_reported_with_a_warning(tmp_path):
    run = copy_run(tmp_path)
    (run / "manifest.json").unlink()  # results written by the Runner alone
    loaded = load_run(run)
    assert "no manifest.json" in loaded.warnings[0]
    assert loaded.tasks == ("toy_sentiment", "toy_toxicity", "toy_preference")
    assert loaded.budget == 1.5 and len(summarise(run)["runs"][0]["rows"]) == 5


def test_interrupted_run_reports_finished_cells_with_the_runners_choice(tmp_path):
    run = copy_run(tmp_path)
    selection = json.loads((run / "selection.json").read_text())
    (run / "cells.jsonl").unlink()
    (run / "selection.json").unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    loaded = load_run(run)
    assert "run status 'interrupted'" in loaded.warnings[0]
    summary = summarise(run)
    for chosen in selection:  # re-made from cells/ under the manifest's budget: same choice
        assert row(summary, chosen["task"], chosen["method"])["strength"] == chosen["strength"]


def test_an_interrupted_sweep_views_the_unsteered_cells_it_went_through(tmp_path):
    """Strength 0 of a method is the shared unsteered cell only where its sweep got to: a method
    interrupted on `select` has no `test` point; a leftover of another schema is left out."""
    run = copy_run(tmp_path)
    (run / "cells.jsonl").unlink()
    (run / "selection.json").unlink()
    for path in (run / "cells").glob("*.json"):
        cell = json.loads(path.read_text())
        if cell["method"] == "meandiff" and cell["split"] == "test":
            path.unlink()  # interrupted before meandiff's test cells
    (run / "cells" / "old.json").write_text(json.dumps({"schema": 1, "cell": "old"}))
    loaded = load_run(run)
    assert "1 of another results schema left out" in loaded.warnings[0]
    zero = {
        (c.task, c.split, c.seed)
        for c in loaded.cells
        if c.method == "meandiff" and c.strength == 0.0
    }
    assert zero and {split for _, split, _ in zero} == {"select"}
    assert all(c.view_of for c in loaded.cells if c.method == "meandiff" and c.strength == 0.0)


def test_bad_run_directories_are_user_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="run directory not found"):
        build_report([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no cells.jsonl and no cells/"):
        build_report([tmp_path / "empty"])
    run = copy_run(tmp_path)
    lines = (run / "cells.jsonl").read_text().splitlines()
    (run / "cells.jsonl").write_text("\n".join([lines[0], "{not json", *lines[1:]]))
    with pytest.raises(UserError, match=r"cells.jsonl:2: not valid JSON"):
        build_report([run])
    write_cells(run, [{"id": "x", "method": "m"}])
    with pytest.raises(UserError, match="cells.jsonl:1: lacks method_name, task, split, strength"):
        build_report([run])
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert "steerbench: error: run directory not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------ comparison


def test_two_runs_side_by_side(tmp_path):
    a = keep_task(copy_run(tmp_path, "before"), "toy_sentiment")
    b = keep_task(copy_run(tmp_path, "after"), "toy_sentiment")
    cells = read_cells(b)
    for c in cells:
        if c["task"] == "toy_sentiment" and c["method"] == "meandiff" and c["split"] == "test":
            c["metrics"]["positive_rate"] += 0.25
    write_cells(b, cells)
    path = build_report([a, b], tmp_path / "comparison")
    text = path.read_text()
    assert "steerbench report: before vs after" in text
    assert "| method | run | strength |" in text and "Δ vs before" in text
    assert "### Run: before" in text and "### Run: after" in text
    summary = json.loads((path.parent / "summary.json").read_text())
    assert [r["label"] for r in summary["runs"]] == ["before", "after"]
    gain = (
        row(summary, "toy_sentiment", "meandiff", 1)["metrics"]["positive_rate"]["mean"]
        - row(summary, "toy_sentiment", "meandiff", 0)["metrics"]["positive_rate"]["mean"]
    )
    assert math.isclose(gain, 0.25)
    assert "+0.25" in text
    # Same directory name twice: labels still differ.
    twins = load_runs([copy_run(tmp_path / "one"), copy_run(tmp_path / "other")])
    assert len({r.label for r in twins}) == 2


# ------------------------------------------------------------------------------ legibility


def _figures(run_dirs: list[Path]):
    runs = load_runs(run_dirs)
    tables = {task: [headlines(run, task) for run in runs] for task in runs[0].tasks}
    colours = F.palette([m for run in runs for m in run.methods])
    yield "overview", F.overview_figure(tables, colours)
    for task in runs[0].tasks:
        views = _views(runs, tables, task)
        yield f"{task} strength", F.strength_figure(task, views, colours)
        fluency = F.fluency_figure(task, views, colours)
        if fluency is not None:
            yield f"{task} fluency", fluency


def add_variants(run: Path, n: int) -> Path:
    """Clone meandiff under n long labels with shifted numbers: a crowded, real-format run."""
    cells, selection = read_cells(run), json.loads((run / "selection.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    for k in range(n):
        label = f"meandiff-variant-{k}-with-a-rather-long-label"
        for c in [c for c in cells if c["method"] == "meandiff"]:
            metrics = {m: v * (1 + 0.1 * (k + 1)) for m, v in c["metrics"].items()}
            # distinct-n in a narrow band, as real runs give: dense tick labels if unchecked
            metrics.update(
                {f"distinct_{n}": 0.98 + 0.0013 * k + 0.0007 * c["seed"] for n in (1, 2, 3)}
            )
            cells.append({**c, "id": f"{c['id']}-{k}", "method": label, "metrics": metrics})
        selection += [{**s, "method": label} for s in selection if s["method"] == "meandiff"]
        manifest["methods"].append({"label": label, "name": "meandiff", "strengths": [0, 1]})
    write_cells(run, cells)
    (run / "selection.json").write_text(json.dumps(selection))
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def assert_no_overlaps(figures, monkeypatch) -> None:
    drawn: list[Text] = []
    original = Text.draw

    def recording_draw(self, renderer):  # only the texts matplotlib really draws
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return original(self, renderer)

    monkeypatch.setattr(Text, "draw", recording_draw)
    for name, fig in figures:
        drawn.clear()
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        boxes = []  # widened 1 px each side (touching labels read as one), 1 px lower
        for t in drawn:
            x0, y0, x1, y1 = t.get_window_extent(renderer).extents
            boxes.append((t.get_text(), Bbox.from_extents(x0 - 1, y0 + 1, x1 + 1, y1 - 1)))
        assert len(boxes) > 10, name
        for (a, box_a), (b, box_b) in combinations(boxes, 2):
            assert not box_a.overlaps(box_b), f"{name}: '{a}' overlaps '{b}'"
        for text, box in boxes:  # nothing cut off at the edges
            assert fig.bbox.x0 - 1 <= box.x0 and box.x1 <= fig.bbox.x1 + 1, f"{name}: '{text}'"
            assert fig.bbox.y0 - 1 <= box.y0 and box.y1 <= fig.bbox.y1 + 1, f"{name}: '{text}'"


def test_figures_have_no_overlapping_text(monkeypatch):
    assert_no_overlaps(_figures([FIXTURE]), monkeypatch)


def test_crowded_comparison_figures_have_no_overlapping_text(tmp_path, monkeypatch):
    a = add_variants(keep_task(copy_run(tmp_path, "baseline-run"), "toy_sentiment"), 4)
    b = add_variants(keep_task(copy_run(tmp_path, "candidate-run"), "toy_sentiment"), 4)
    assert_no_overlaps(_figures([a, b]), monkeypatch)


def test_each_method_has_one_colour_in_every_figure(built):
    colours = F.palette(load_run(FIXTURE).methods)
    assert colours == {"prompting": F.COLOURS[0], "meandiff": F.COLOURS[1]}
    for svg in (built.parent / "figures").glob("*.svg"):
        text = svg.read_text()
        assert colours["meandiff"] in text, svg.name  # meandiff ran on every suite
        if "preference" not in svg.name:
            assert colours["prompting"] in text, svg.name
