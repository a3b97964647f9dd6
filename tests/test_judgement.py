"""Self-judgement: the accuracy computation (data-driven cases), the measurement on a tiny
model, the `steerbench judge` command and the report's chance note."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.judgement import (
    JudgedPair,
    JudgementPairs,
    accuracy_interval,
    chance_note,
    measure,
    pair_accuracies,
)
from bench.records import Judgement
from bench.stats import Interval
from bench.target import SuffixQuestion
from reports import judgement as judgement_report
from tests.tiny import tiny_gpt2

CASES = json.loads((Path(__file__).parent / "cases" / "judgement.json").read_text())[
    "judgement_cases"
]
QUESTION = SuffixQuestion("\nQuestion: Is the above text positive? Answer:", " Yes", " No")


def _nan(values) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_pair_accuracies(case):
    pairwise, pointwise = pair_accuracies(case["better"], case["worse"], case["tie"])
    np.testing.assert_array_equal(pairwise, _nan(case["pairwise"]))
    np.testing.assert_array_equal(pointwise, _nan(case["pointwise"]))
    if "n" in case:
        interval = accuracy_interval(pairwise)
        assert interval.n == case["n"]  # ties left out of the examples
        assert interval.estimate == case["mean_pairwise"]


def test_interval_brackets_the_estimate():
    per_pair = np.array([1.0, 0.0, 1.0, 1.0, 0.5, 1.0, 0.0, 1.0])
    i = accuracy_interval(per_pair)
    assert i.low <= i.estimate == per_pair.mean() <= i.high and i.n == 8


def test_measure_on_a_tiny_model():
    subject = tiny_gpt2()
    pairs = JudgementPairs(
        (
            JudgedPair("a", "The movie was", " wonderful", " terrible", QUESTION),
            JudgedPair("b", "The food is", " great", " awful", QUESTION),
            JudgedPair("c", "The staff are", " kind", " rude", QUESTION, tie=True),
        ),
        "toy pairs",
    )
    record = measure(subject, "toy", pairs)
    assert record.pairwise.n == 2 and record.ties == 1
    assert 0.0 <= record.pairwise.estimate <= 1.0 and record.question == QUESTION.question
    # The record round-trips through its JSON form (the run folder's judgement.json).
    assert Judgement.from_dict(json.loads(json.dumps(record.to_dict())), "x") == record


def test_measure_says_why_there_are_no_pairs():
    record = measure(tiny_gpt2(), "toy", JudgementPairs(missing="no labels"))
    assert record.pairwise is None and record.missing == "no labels"
    assert judgement_report.cell(record.pairwise, record.missing) == "- (no labels)"


def test_chance_note():
    at_chance = Judgement("webgpt", "m", pairwise=Interval(0.52, 0.45, 0.59, n=40))
    assert chance_note(at_chance) == (
        "cannot steer here: the subject judges this suite at chance, 0.52 [0.45, 0.59]"
    )
    assert chance_note(Judgement("hh", "m", pairwise=Interval(0.8, 0.7, 0.9, n=40))) == ""
    assert chance_note(Judgement("tox", "m", missing="no pairs")) == ""
    wrong = Judgement("tox", "m", pairwise=Interval(0.1, 0.0, 0.3, n=10))
    assert chance_note(wrong) == (
        "cannot steer here: the subject judges this suite the wrong way round, 0.10 [0.00, 0.30]"
    )


EXPERIMENT = """
[[tasks]]
name = "sentiment"
params = { source = "builtin", n_fit = 4, n_select = 3, n_test = 4 }

[[tasks]]
name = "toxicity"
params = { source = "builtin", subset = "all", n_fit = 4, n_select = 3, n_test = 4 }

[[tasks]]
name = "webgpt"
params = { source = "builtin", n_fit = 4, n_select = 3, n_test = 4 }
"""


def test_judge_command(tmp_path, capsys):
    models = [tmp_path / "base", tmp_path / "tuned"]  # two tiny models, side by side
    for seed, folder in enumerate(models):
        subject = tiny_gpt2(seed=seed)
        subject.model.save_pretrained(folder)
        subject.tokenizer.save_pretrained(folder)
    experiment = tmp_path / "exp.toml"
    experiment.write_text(EXPERIMENT)
    out = tmp_path / "judged"
    argv = ["judge", *map(str, models), "-e", str(experiment), "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    print(printed)
    header, *rows = printed.splitlines()[:4]
    assert header.split() == ["suite", *map(str, models)]
    assert [r.split()[0] for r in rows] == ["sentiment", "toxicity", "webgpt"]
    assert "n=" in rows[0] and "no non-toxic and toxic" in rows[1]
    records = judgement_report.read(out)
    assert {r.task for r in records} == {"sentiment", "toxicity", "webgpt"}
    assert (out / "judgement.md").exists() and (out / "judgement.png").exists()
    assert "| suite |" in (out / "judgement.md").read_text()


def test_judge_command_names_a_model_it_cannot_load(tmp_path, capsys):
    experiment = tmp_path / "exp.toml"
    experiment.write_text(EXPERIMENT)
    missing = str(tmp_path / "no-such-model")
    assert main(["judge", missing, "-e", str(experiment), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot load model" in err


FIXTURE = Path(__file__).parent / "fixtures" / "run_small"


def _judged_run(tmp_path, records: list[Judgement]) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (run / "judgement.json").write_text(json.dumps([r.to_dict() for r in records]))
    return run


def test_report_rows_show_the_judgement_and_the_chance_note(tmp_path):
    from reports.build import headline_table
    from reports.headline import headlines
    from reports.runs import load_run

    # The fixture's `meandiff` stands in for a self-judging method: the report reads which
    # methods a judgement concerns from the record, as the runner wrote it.
    chance = Interval(0.52, 0.45, 0.59, n=40)
    run = load_run(
        _judged_run(
            tmp_path,
            [
                Judgement("toy_sentiment", "m", pairwise=chance, methods=("meandiff",)),
                Judgement(
                    "toy_toxicity",
                    "m",
                    pairwise=Interval(0.9, 0.8, 0.97, n=40),
                    methods=("meandiff",),
                ),
            ],
        )
    )
    note = "cannot steer here: the subject judges this suite at chance, 0.52 [0.45, 0.59]"
    rows = {r.method: r for r in headlines(run, "toy_sentiment", 1000)}
    assert note in rows["meandiff"].notes and rows["meandiff"].judgement.pairwise == chance
    assert rows["prompting"].judgement is None and note not in rows["prompting"].notes
    table = headline_table("toy_sentiment", [list(rows.values())], [run])
    column = table.header.index("self-judgement [95% CI]")
    cells = {row[0].lstrip("*★ "): row[column] for row in table.rows}
    assert "0.52 [0.45, 0.59], n=40 (chance)" in [v for k, v in cells.items() if "meandiff" in k]
    judged = {r.method: r for r in headlines(run, "toy_toxicity", 1000)}["meandiff"]
    assert judged.judgement.pairwise.estimate == 0.9
    assert not any("cannot steer" in n for n in judged.notes)


def test_older_runs_have_no_judgement_column():
    from reports.build import headline_table
    from reports.headline import headlines
    from reports.runs import load_run

    run = load_run(FIXTURE)
    assert run.judgements == ()
    table = headline_table("toy_sentiment", [headlines(run, "toy_sentiment", 1000)], [run])
    assert "self-judgement [95% CI]" not in table.header


def _tables(run_dir: Path):
    from reports.headline import headlines
    from reports.runs import load_runs

    runs = load_runs([run_dir])
    return {task: [headlines(run, task) for run in runs] for task in runs[0].tasks}


JUDGED = [  # the fixture's `meandiff` (and on one suite `prompting`) stand in as self-judging
    Judgement(
        "toy_sentiment",
        "m",
        pairwise=Interval(0.52, 0.45, 0.59, n=40),
        methods=("meandiff", "prompting"),
    ),
    Judgement("toy_toxicity", "m", pairwise=Interval(0.9, 0.8, 0.97, n=40), methods=("meandiff",)),
    Judgement("toy_preference", "m", pairwise=Interval(0.2, 0.1, 0.3, n=40), methods=("meandiff",)),
]


def test_judged_effects_point_up_where_the_suite_wants_to_go(tmp_path):
    from reports.figures import vs_unsteered
    from reports.judgement import judged_effects

    tables = _tables(_judged_run(tmp_path, JUDGED))
    points = {(p.task, p.method): p for p in judged_effects(tables)}
    assert set(points) == {
        ("toy_sentiment", "meandiff"),
        ("toy_sentiment", "prompting"),
        ("toy_toxicity", "meandiff"),
        ("toy_preference", "meandiff"),
    }
    rows = {(r.task, r.method): r for per_run in tables.values() for r in per_run[0]}
    # Toxicity is lower-is-better: its drop counts upwards, the interval turned with it.
    estimate, low, high = vs_unsteered(rows[("toy_toxicity", "meandiff")])
    assert estimate < 0 and points[("toy_toxicity", "meandiff")].effect == (-estimate, -high, -low)
    assert points[("toy_sentiment", "meandiff")].effect == vs_unsteered(
        rows[("toy_sentiment", "meandiff")]
    )
    assert points[("toy_toxicity", "meandiff")].accuracy.estimate == 0.9
    # Strength 0 chosen: shown (hollow), at Δ = 0 by construction.
    unsteered = points[("toy_preference", "meandiff")]
    assert unsteered.unsteered and unsteered.effect[0] == 0


def test_report_figure_relates_judgement_to_effect(tmp_path, monkeypatch):
    from reports import build_report
    from reports.figures import palette
    from reports.judgement import effect_figure, judged_effects
    from tests.test_reports import assert_no_overlaps

    run = _judged_run(tmp_path, JUDGED)
    report = build_report([run])
    out = report.parent
    png, svg = out / "figures" / "judgement_effect.png", out / "figures" / "judgement_effect.svg"
    assert png.stat().st_size > 10_000 and svg.exists()
    text = report.read_text()
    assert "](figures/judgement_effect.png)" in text and "necessary, not sufficient" in text
    assert 'alt="Self-judgement vs effect"' in (out / "report.html").read_text()
    labels = svg.read_text()
    for name in ("toy_sentiment", "toy_toxicity", "toy_preference", "chance"):
        assert name in labels  # each suite annotated, chance in the legend
    tables = _tables(run)
    colours = palette(["prompting", "meandiff"])
    assert_no_overlaps([("judgement", effect_figure(judged_effects(tables), colours))], monkeypatch)


def test_no_judgement_figure_without_measured_judgements(tmp_path):
    from reports.figures import palette
    from reports.judgement import effect_blocks

    colours = palette(["prompting", "meandiff"])
    unpaired = [Judgement("toy_sentiment", "m", missing="no pairs", methods=("meandiff",))]
    for run in (FIXTURE, _judged_run(tmp_path, unpaired)):  # no judgement.json; no pairs
        assert effect_blocks(_tables(run), colours, tmp_path / "figures") == []
    assert not (tmp_path / "figures").exists()
