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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.distributed import Group, free_port
from tasks.testbed.lm_eval_tasks import write_tasks
from tests.test_lm_eval_model import TINY_TASKS
from tests.test_reports_fixture import MeanDiff, ToySentiment, registered
from tests.tiny import tiny_gpt2

ROOT = Path(__file__).resolve().parent.parent

ENTRY_POINTS = """\
[steerbench.methods]
meandiff = tests.test_reports_fixture:MeanDiff

meandiff_fits_on_rank_0 = tests.test_distributed:FitsOnRank0Only

[steerbench.tasks]
toy_sentiment = tests.test_reports_fixture:ToySentiment
toy_toxicity = tests.test_reports_fixture:ToyToxicity
toy_preference = tests.test_reports_fixture:ToyPreference
toy_fails_on_rank_1 = tests.test_distributed:FailsOnRank1

[steerbench.model_sources]
world_tiny = tests.test_distributed:WORLD_MODEL
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

[capability]
tasks = {lm_eval_tasks}
include_path = "{lm_eval}"
include_defaults = false
"""


class FailsOnRank1(ToySentiment):
    """Scores fine in one process and on rank 0; rank 1 fails on its share of a cell."""

    name = "toy_fails_on_rank_1"

    def score(self, example, outputs):
        if os.environ.get("RANK") == "1":
            raise RuntimeError("the scorer ran out of memory")
        return super().score(example, outputs)


class FitsOnRank0Only(MeanDiff):
    """Fits on rank 0 only: any other rank must take rank 0's states."""

    name = "meandiff_fits_on_rank_0"

    def fit(self, subject, target):
        if os.environ.get("RANK", "0") != "0":
            raise RuntimeError(f"rank {os.environ['RANK']} fitted a state")
        return super().fit(subject, target)


class WorldModel:
    """The world's tiny model as a model source that names its own capability tasks (as the
    testbed does), the world's folder given by $STEERBENCH_TEST_WORLD."""

    name = "world_tiny"
    summary = "the distributed tests' tiny model"

    def locate(self, config, progress: bool) -> str:
        return str(Path(os.environ["STEERBENCH_TEST_WORLD"]) / "model")

    def display_name(self, config) -> str:
        return self.name

    def training_corpus(self, config):
        return None

    def capability_tasks(self, config):
        from bench.capability import OwnTasks

        folder = Path(os.environ["STEERBENCH_TEST_WORLD"]) / "lm_eval"
        return OwnTasks(CAPABILITY_TASKS, str(folder))


WORLD_MODEL = WorldModel()


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
    write_tasks(root / "lm_eval", TINY_TASKS)  # the capability suite's lm-eval tasks
    # One more, "probe": testbed_grammar whose per-document scoring says which rank ran it.
    config = (root / "lm_eval" / "testbed_grammar.yaml").read_text()
    config = config.replace("task: testbed_grammar", "task: probe").replace(
        "- testbed\n", "- probe\n"
    )
    (root / "lm_eval" / "probe.yaml").write_text(
        config + "process_results: !function probe_utils.process_results\n"
    )
    (root / "lm_eval" / "probe_utils.py").write_text(PROBE)
    return root


# The probe task's scoring: lm-eval's accuracy, and the document's text appended to
# $PROBE_FOLDER/rank-$RANK.txt; it fails on the rank named by $PROBE_FAILS_ON.
PROBE = """\
import os
from pathlib import Path


def process_results(doc, results):
    rank = os.environ.get("RANK", "0")
    if rank == os.environ.get("PROBE_FAILS_ON"):
        raise RuntimeError("the probe's scorer ran out of memory")
    if os.environ.get("PROBE_FOLDER"):
        with open(Path(os.environ["PROBE_FOLDER"]) / f"rank-{rank}.txt", "a") as out:
            out.write(doc["good"] + "\\n")
    lls = [ll for ll, _ in results]
    return {"acc": float(lls.index(max(lls)) == 0)}
"""


CAPABILITY_TASKS = (*sorted(TINY_TASKS), "probe")


def _experiment_text(world: Path, batch_size: int, lm_eval_tasks=CAPABILITY_TASKS) -> str:
    return EXPERIMENT.format(
        model=(world / "model").as_posix(),
        batch_size=batch_size,
        lm_eval_tasks=json.dumps(list(lm_eval_tasks)),
        lm_eval=(world / "lm_eval").as_posix(),
    )


def _experiment(world: Path, batch_size: int) -> Path:
    path = world / f"experiment-{batch_size}.toml"
    path.write_text(_experiment_text(world, batch_size))
    return path


def _cli(
    world: Path, *args: str, env: dict[str, str] | None = None, module: bool = True
) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` (`python ARGS` when not `module`) with the test plugins."""
    path = os.pathsep.join([str(world / "plugins"), str(ROOT)])
    environment = {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, *(("-m", "bench") if module else ()), *args],
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
    one, two, probe = tmp_path / "one", tmp_path / "two", tmp_path / "probe"
    _in_process(world, 2, one)
    probe.mkdir()
    done = _cli(
        world,
        *("run", str(_experiment(world, 2)), "-o", str(two), "-q", "--processes", "2"),
        env={"PROBE_FOLDER": str(probe)},
    )
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
    # Capability: lm-eval's evaluator shared the documents among the ranks; rank 0 gathered
    # them. Accuracies per item are equal; log-likelihoods, batched differently, to rounding.
    capability = [json.loads((run / "capability.json").read_text()) for run in (one, two)]
    assert len(capability[0]) > 3
    assert _close(capability[1], capability[0])
    items = [(run / "capability_items.jsonl").read_text().splitlines() for run in (one, two)]
    assert len(items[0]) == len(items[1]) > 20
    assert all(_close(json.loads(b), json.loads(a)) for a, b in zip(*items))
    # Each rank scored its own share of lm-eval's documents: together all, none twice.
    shares = [set((probe / f"rank-{r}.txt").read_text().splitlines()) for r in (0, 1)]
    assert shares[0] and shares[1] and not shares[0] & shares[1]
    assert shares[0] | shares[1] == {doc["good"] for doc in TINY_TASKS["testbed_grammar"]["test"]}
    # Resume: a second launch finds every cell and evaluation finished and computes none.
    done_before = _mtimes(two / "cells") + _mtimes(two / "capability")
    again = _cli(world, "run", str(_experiment(world, 2)), "-o", str(two), "-q", "--processes", "2")
    assert again.returncode == 0, again.stderr
    assert _mtimes(two / "cells") + _mtimes(two / "capability") == done_before


def _mtimes(folder: Path) -> list[int]:
    return sorted(p.stat().st_mtime_ns for p in folder.iterdir())


def _close(a, b) -> bool:
    """`a` equals `b` in structure and text, numbers to rounding (REL)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_close, a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return b == pytest.approx(a, rel=REL, nan_ok=True)
    return a == b


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
        _experiment_text(world, 2).split("[[tasks]]")[0]
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


def test_a_rank_failing_inside_lm_eval_says_so_and_the_others_stop(world, tmp_path):
    """lm-eval's evaluator exchanges documents among the ranks: rank 1's failure there is its
    own line, rank 0 stops at the next exchange and says why, and no evaluation is kept."""
    experiment = world / "fails_in_lm_eval.toml"
    text = _experiment_text(world, 2, lm_eval_tasks=["probe"])
    tasks = text.index("[[tasks]]")
    experiment.write_text(
        text[:tasks] + '[[tasks]]\nname = "toy_sentiment"\n' + text[text.index("[capability]") :]
    )
    out = tmp_path / "run"
    done = _cli(
        world,
        *("run", str(experiment), "-o", str(out), "-q", "--processes", "2"),
        env={"PROBE_FAILS_ON": "1"},
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert (
        "steerbench: error: rank 1 failed in lm-eval: RuntimeError: the probe's scorer ran out "
        "of memory; finished cells are kept"
    ) in lines, done.stderr
    assert len(lines) == 2 and lines[0] != lines[1] and "rank 0" in " ".join(lines), done.stderr
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert not (out / "capability.json").exists()
    assert not (out / "capability").exists() or not any((out / "capability").iterdir())


def test_steerbench_lm_eval_in_two_processes_gives_the_results_of_one(world, tmp_path):
    """`steerbench lm-eval --model steerbench` under a launcher (here `bench.distributed.launch`,
    what --processes runs; `accelerate launch -m bench lm-eval ...` sets the same variables)
    shares lm-eval's documents among the processes and reports the numbers of one."""
    args = [
        *("lm-eval", "--model", "steerbench", "--model_args", f"pretrained={world / 'model'}"),
        *("--device", "cpu", "--tasks", ",".join(CAPABILITY_TASKS)),
        *("--include_path", str(world / "lm_eval"), "--log_samples"),
    ]
    probe = tmp_path / "probe"
    probe.mkdir()
    one = _cli(world, *args, "--output_path", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = _cli(
        world,
        "-c",
        "import sys; from bench.distributed import launch; sys.exit(launch(2, sys.argv[1:]))",
        *args,
        *("--output_path", str(tmp_path / "two")),
        env={"PROBE_FOLDER": str(probe)},
        module=False,
    )
    assert two.returncode == 0, two.stderr
    results = [
        json.loads(next((tmp_path / run).glob("**/results_*.json")).read_text())["results"]
        for run in ("one", "two")
    ]
    assert results[0].keys() == set(CAPABILITY_TASKS)
    assert _close(results[1], results[0])
    assert all((probe / f"rank-{r}.txt").read_text() for r in (0, 1))  # both ranks took part


def test_the_scaling_measurement_compares_one_and_n_processes_at_equal_work(world, tmp_path):
    """`steerbench bench --processes 2`: generation throughput and one lm-eval evaluation of
    the model's own capability tasks, in one process and in two, as ratios."""
    out = tmp_path / "scaling.json"
    args = ["bench", "--model", "world_tiny", "--task", "toy_sentiment", "--scaling-only"]
    args += ["--processes", "2", "--batch", "2", "--tokens", "3", "--scaling-batches", "2"]
    done = _cli(world, *args, "--json", str(out), env={"STEERBENCH_TEST_WORLD": str(world)})
    assert done.returncode == 0, done.stderr
    row = json.loads(out.read_text())["scaling"]
    assert row["processes"] == 2 and row["cpus"] == os.cpu_count()
    assert row["tokens"] == 2 * 2 * 2 * 3  # batch x processes x batches each, 3 tokens each
    assert row["ratio"] == pytest.approx(
        row["n_processes_tokens_per_second"] / row["one_process_tokens_per_second"], rel=1e-2
    )
    one, two = row["capability_one_process_seconds"], row["capability_n_processes_seconds"]
    assert one > 0 and two > 0 and row["capability_ratio"] == pytest.approx(one / two, rel=1e-2)
    printed = done.stdout.splitlines()
    assert any(line.startswith("scaling: 2 processes / 1 process") for line in printed)
    assert any("lm-eval evaluation" in line for line in printed), done.stdout


def _two_nodes_text(world: Path) -> str:
    """The experiment's settings with one method that fits on rank 0 only, one task and no
    capability suite."""
    head = _experiment_text(world, 2).split("[[methods]]")[0]
    return head + (
        '[[methods]]\nname = "meandiff_fits_on_rank_0"\nstrengths = [0, 1, 4]\n\n'
        '[[tasks]]\nname = "toy_sentiment"\n\n[capability]\ntasks = []\n'
    )


def test_two_nodes_without_a_shared_filesystem_use_rank_0s_states(world, tmp_path):
    """Two machines, one process each (two nodes over localhost, as a multi-node launch starts
    them: LOCAL_RANK 0 on both), each with its own state cache: rank 1 fits nothing (its
    method fails if it tries), it receives rank 0's states and keeps them in its own cache,
    and the run gives the outputs of one process."""
    experiment = world / "two_nodes.toml"
    experiment.write_text(_two_nodes_text(world))
    one = _cli(
        world,
        *("run", str(experiment), "-o", str(tmp_path / "one"), "-q"),
        env={"STEERBENCH_CACHE": str(tmp_path / "cache-one")},
    )
    assert one.returncode == 0, one.stderr
    rendezvous = {"WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    rendezvous |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    with ThreadPoolExecutor(2) as pool:
        nodes = [
            pool.submit(
                _cli,
                world,
                *("run", str(experiment), "-o", str(tmp_path / "two"), "-q"),
                env={
                    **rendezvous,
                    "RANK": str(rank),
                    "STEERBENCH_CACHE": str(tmp_path / f"cache-{rank}"),
                },
            )
            for rank in (0, 1)
        ]
        done = [node.result() for node in nodes]
    assert [d.returncode for d in done] == [0, 0], done[0].stderr + done[1].stderr
    first, second = _by_key(tmp_path / "one"), _by_key(tmp_path / "two")
    assert first.keys() == second.keys() and len(first) == 3 * 2 * 2  # strengths x seeds x splits
    for key, (metrics, examples) in first.items():
        _same_records(examples, second[key][1], key)
        assert second[key][0] == _approx(metrics), key
    kept = [sorted(p.name for p in (tmp_path / f"cache-{r}" / "states").iterdir()) for r in (0, 1)]
    assert kept[0] and kept[1] == kept[0]
