"""Data-parallel runs (`bench.distributed`): a run in 2 processes gives the per-example outputs
and metric values of a run in 1; the run's outputs do not depend on the batch size; sharding
cuts at batch boundaries; a failing rank ends the run with one line.

The launched processes are fresh interpreters: the test tasks and method reach them as a
plugin would, through entry points of a distribution found on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.distributed import Group
from tests.test_reports_fixture import ToySentiment, registered
from tests.tiny import tiny_gpt2

ROOT = Path(__file__).resolve().parent.parent

ENTRY_POINTS = """\
[steerbench.methods]
meandiff = tests.test_reports_fixture:MeanDiff

[steerbench.tasks]
toy_sentiment = tests.test_reports_fixture:ToySentiment
toy_toxicity = tests.test_reports_fixture:ToyToxicity
toy_preference = tests.test_reports_fixture:ToyPreference
toy_fails_on_rank_1 = tests.test_distributed:FailsOnRank1
"""

EXPERIMENT = """\
seeds = [0, 1]
report = false

[model]
name = "{model}"

[selection]
test_strengths = "all"

[generation]
max_new_tokens = 6
temperature = 1.0
batch_size = {batch_size}

[[methods]]
name = "prompting"

[[methods]]
name = "meandiff"
strengths = [0, 1, 4]

[[tasks]]
name = "toy_sentiment"

[[tasks]]
name = "toy_toxicity"

[[tasks]]
name = "toy_preference"
"""


class FailsOnRank1(ToySentiment):
    """Scores fine in one process and on rank 0; rank 1 fails on its share of a cell."""

    name = "toy_fails_on_rank_1"

    def score(self, example, outputs):
        if os.environ.get("RANK") == "1":
            raise RuntimeError("the scorer ran out of memory")
        return super().score(example, outputs)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return make_world(tmp_path_factory.mktemp("world"))


def make_world(root: Path) -> Path:
    """A folder with a tiny saved model and a plugin distribution naming the test tasks."""
    subject = tiny_gpt2(vocab_size=600)
    subject.model.save_pretrained(root / "model")
    subject.tokenizer.save_pretrained(root / "model")
    info = root / "plugins" / "steerbench_test_plugins-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: steerbench-test-plugins\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def _experiment(world: Path, batch_size: int) -> Path:
    path = world / f"experiment-{batch_size}.toml"
    path.write_text(EXPERIMENT.format(model=(world / "model").as_posix(), batch_size=batch_size))
    return path


def _cli(world: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path = os.pathsep.join([str(world / "plugins"), str(ROOT)])
    environment = {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _in_process(world: Path, batch_size: int, out: Path) -> None:
    from bench.cli import main

    with registered():
        assert main(["run", str(_experiment(world, batch_size)), "-o", str(out), "-q"]) == 0


def _by_key(run: Path) -> dict[tuple, tuple[dict, list[dict]]]:
    """Each cell's metrics and per-example records, by what the cell is (its id hashes the
    batch size, which changes no number)."""
    records: dict[str, list[dict]] = {}
    for line in (run / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        records.setdefault(record["cell"], []).append(
            {k: record[k] for k in ("example", "scores", "outputs", "details")}
        )
    cells = {}
    for line in (run / "cells.jsonl").read_text().splitlines():
        cell = json.loads(line)
        key = tuple(cell[k] for k in ("method", "task", "split", "strength", "seed"))
        cells[key] = (cell["metrics"], records.get(cell["id"], []))
    return cells


# Samples, task scores and log-likelihood outputs are the same to the bit (each rank forms the
# batches one process would: shards are whole batches). The evaluator scores a cell's samples in
# batches of samples across examples, sorted by length, which a shard forms differently; a
# different padded width changes the last bits of a float sum, so fluency numbers agree to
# rounding only (about 1e-8 relative here).
REL = 1e-6


def _approx(values: dict) -> dict:
    """`values` compared to rounding (REL); null (a NaN in JSON) only with null."""
    return {k: v if v is None else pytest.approx(v, rel=REL) for k, v in values.items()}


def _same_records(first: list[dict], second: list[dict], key) -> None:
    assert [r["example"] for r in first] == [r["example"] for r in second], key
    for a, b in zip(first, second):
        assert a["outputs"] == b["outputs"] and a["details"] == b["details"], (key, a["example"])
        assert a["scores"] == _approx(b["scores"]), key


def test_shards_are_contiguous_whole_batches_covering_every_item():
    for n in (0, 1, 5, 8, 9, 33):
        for size in (1, 2, 3):
            for batch in (1, 2, 4):
                shards = [Group(rank, size).shard(n, batch) for rank in range(size)]
                assert [i for s in shards for i in s] == list(range(n))
                assert all(s.start % batch == 0 for s in shards)
    assert [Group(r, 2).shard(8, 2) for r in range(2)] == [range(0, 4), range(4, 8)]
    assert Group().shard(7, 3) == range(7)  # one process: everything


def test_two_processes_give_the_outputs_and_metrics_of_one(world, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _in_process(world, 2, one)
    done = _cli(world, "run", str(_experiment(world, 2)), "-o", str(two), "-q", "--processes", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("results:") == 1  # rank 0 alone reports
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    first, second = _by_key(one), _by_key(two)
    assert first.keys() == second.keys() and len(first) > 10
    for key, (metrics, examples) in first.items():
        _same_records(examples, second[key][1], key)
        assert second[key][0] == _approx(metrics), key
    for name in ("selection.json", "skipped.json"):
        assert json.loads((one / name).read_text()) == json.loads((two / name).read_text())
    # Side effects across suites: cells of their own, sharded like any.
    effects = [json.loads((run / "side_effects.json").read_text()) for run in (one, two)]
    assert len(effects[0]) == len(effects[1]) > 0
    for a, b in zip(*effects):
        what = ("method", "fitted_for", "scored_on", "strength", "seeds")
        assert [a[k] for k in what] == [b[k] for k in what]
        assert _approx({k: a[k] for k in ("value", "unsteered")}) == {
            k: b[k] for k in ("value", "unsteered")
        }
        assert b["difference"] == _approx(a["difference"])
    # Resume: a second launch finds every cell finished and computes none.
    cells = sorted(p.stat().st_mtime_ns for p in (two / "cells").iterdir())
    again = _cli(world, "run", str(_experiment(world, 2)), "-o", str(two), "-q", "--processes", "2")
    assert again.returncode == 0, again.stderr
    assert sorted(p.stat().st_mtime_ns for p in (two / "cells").iterdir()) == cells


def test_the_batch_size_changes_no_sampled_output(world, tmp_path):
    _in_process(world, 1, tmp_path / "b1")
    _in_process(world, 8, tmp_path / "b8")
    small, large = _by_key(tmp_path / "b1"), _by_key(tmp_path / "b8")
    assert small.keys() == large.keys()
    for key, (metrics, examples) in small.items():
        texts = [o for r in examples for o in r["outputs"] if isinstance(o, list)]
        assert texts == [o for r in large[key][1] for o in r["outputs"] if isinstance(o, list)]
        # Log-likelihoods, being one forward pass per batch, agree to rounding (see REL).
        _loose = [r | {"outputs": _rounded(r["outputs"])} for r in examples]
        _same_records(_loose, [r | {"outputs": _rounded(r["outputs"])} for r in large[key][1]], key)
        assert large[key][0] == _approx(metrics), key
    assert sum(len(e) for _, e in small.values()) > 100


def _rounded(outputs: list) -> list:
    """Log-likelihood outputs rounded to 6 significant digits; samples as they are."""
    return [
        o if isinstance(o, list) else {k: float(f"{v:.6g}") for k, v in o.items()} for o in outputs
    ]


def test_a_failing_rank_ends_the_run_with_one_line_and_no_cell_half_written(world, tmp_path):
    experiment = world / "fails.toml"
    experiment.write_text(
        EXPERIMENT.format(model=(world / "model").as_posix(), batch_size=2).split("[[tasks]]")[0]
        + '[[tasks]]\nname = "toy_fails_on_rank_1"\n'
    )
    out = tmp_path / "run"
    done = _cli(world, "run", str(experiment), "-o", str(out), "-q", "--processes", "2")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "steerbench: error: rank 1 failed: RuntimeError: the scorer ran out of memory; "
        "finished cells are kept"
    ], done.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert not (out / "cells").exists() or not any((out / "cells").iterdir())
    assert not (out / "cells.jsonl").exists()
