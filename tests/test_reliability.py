"""Every user error is one line with exit 2, before a model loads; run folders are owned by one
run; damaged cached states and result files are moved aside and computed again.

`BAD_INPUTS` is the table of mistakes a user makes (issue 18): each goes through the CLI entry
`bench.cli.main`, and must exit 2 with one line on stderr naming the problem, no traceback.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.cli import main
from bench.config import Experiment, load_experiment
from bench.errors import SteerbenchWarning, UserError
from bench.params import parse
from bench.registry import TASKS
from bench.rundir import RunDir, read_jsonl
from bench.state import State, StateCache
from tests.toy_task import ToyTask


def toml_text(data: dict[str, Any]) -> str:
    """A TOML file for `data` (scalars, lists, tables, lists of tables), NaN and inf included."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float) and not math.isfinite(v):
            return ("-" if v < 0 else "") + ("nan" if math.isnan(v) else "inf")
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = [f"{json.dumps(k)} = {value(v)}" for k, v in data.items() if not _nested(v)]
    for key, v in data.items():
        if isinstance(v, dict):
            lines += [f"[{json.dumps(key)}]"] + [
                f"{json.dumps(k)} = {value(x)}" for k, x in v.items()
            ]
        elif is_tables(v):
            for table in v:
                lines += [f"[[{json.dumps(key)}]]"]
                lines += [f"{json.dumps(k)} = {value(x)}" for k, x in table.items()]
    return "\n".join(lines) + "\n"


def _nested(v: Any) -> bool:
    return isinstance(v, dict) or (
        isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
    )


def base_experiment(model: str) -> dict[str, Any]:
    """A tiny experiment that runs (test_the_base_experiment_runs): each bad input changes it."""
    return {
        "report": False,
        "seeds": [0],
        "model": {"name": model},
        "generation": {"max_new_tokens": 2, "batch_size": 4},
        "methods": [{"name": "prompting", "strengths": [1]}],
        "tasks": [{"name": "toy", "params": {"n": 2, "samples": 1}}],
    }


# ------------------------------------------------------------------ what the cases start from
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, gpt2_subject) -> Path:
    """The tiny GPT-2 saved the way save_pretrained saves a model."""
    path = tmp_path_factory.mktemp("model") / "tiny-gpt2"
    gpt2_subject.model.save_pretrained(path)
    gpt2_subject.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def toy_registered():
    with TASKS.registered(ToyTask):
        yield


def _copy(model: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(model, tmp / "broken-model"))


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _no_config(model: Path, tmp: Path) -> str:
    folder = _copy(model, tmp)
    (folder / "config.json").unlink()
    return str(folder)


def _broken_config(model: Path, tmp: Path) -> str:
    folder = _copy(model, tmp)
    (folder / "config.json").write_text('{"model_type": ')
    return str(folder)


def _unknown_model_type(model: Path, tmp: Path) -> str:
    folder = _copy(model, tmp)
    (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    return str(folder)


def _no_weights(model: Path, tmp: Path) -> str:
    folder = _copy(model, tmp)
    (folder / "model.safetensors").unlink()
    return str(folder)


def _truncated_weights(model: Path, tmp: Path) -> str:
    folder = _copy(model, tmp)
    _truncate(folder / "model.safetensors")
    return str(folder)


def _model_is_a_file(model: Path, tmp: Path) -> str:
    (tmp / "model.bin").write_bytes(b"\0" * 16)
    return str(tmp / "model.bin")


def _data(text: str | bytes, name: str = "prompts.jsonl") -> Callable[[Path, str], None]:
    def write(tmp: Path, model: str) -> None:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return write


def _sentiment_from(name: str) -> dict[str, Any]:
    params = {"source": f"{{tmp}}/{name}", "n_fit": 1, "n_select": 1, "n_test": 1}
    return {"tasks": [{"name": "sentiment", "params": params}]}


@dataclass(frozen=True)
class Bad:
    """One bad input: changes to the base experiment (or the whole file's bytes), arguments
    after the experiment, files to write first, a model folder to break; and what the one line
    says. `{tmp}` in any string is the test's folder; the run folder is `{tmp}/run`."""

    message: str
    changes: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    args: tuple[str, ...] = ()
    prepare: Callable[[Path, str], None] | None = None  # (the test's folder, the model)
    model: Callable[[Path, Path], str] | None = None


NAN, INF = math.nan, math.inf
GEN = base_experiment("")["generation"]
M = base_experiment("")["methods"][0]

BAD_INPUTS: dict[str, Bad] = {
    # ---- the experiment's values
    "no seeds": Bad("seeds = [] runs no cell", {"seeds": []}),
    "negative seed": Bad("seed -1 is out of range", {"seeds": [-1]}),
    "huge seed": Bad("seed 9223372036854775807 is out of range", {"seeds": [2**63 - 1]}),
    "repeated seed": Bad("seeds repeat a seed: [0, 0]", {"seeds": [0, 0]}),
    "float seed": Bad("seeds[0]: expected an integer", {"seeds": [1.5]}),
    "negative perplexity cap": Bad(
        "perplexity_cap must be a finite number > 0", {"perplexity_cap": -1}
    ),
    "zero perplexity cap": Bad("perplexity_cap must be a finite number > 0", {"perplexity_cap": 0}),
    "nan perplexity cap": Bad(
        "perplexity_cap: expected a finite number, got nan", {"perplexity_cap": NAN}
    ),
    "no methods": Bad("methods = [] runs nothing", {"methods": []}),
    "no tasks": Bad("tasks = [] runs nothing", {"tasks": []}),
    "negative threads": Bad("threads must be >= 0", {"threads": -1}),
    "empty output_dir": Bad("output_dir must not be empty", {"output_dir": ""}),
    "nan temperature": Bad(
        "generation.temperature: expected a finite number, got nan",
        {"generation": {**GEN, "temperature": NAN}},
    ),
    "inf temperature": Bad(
        "generation.temperature: expected a finite number, got inf",
        {"generation": {**GEN, "temperature": INF}},
    ),
    "negative temperature": Bad(
        "temperature must be a finite number >= 0", {"generation": {**GEN, "temperature": -1.0}}
    ),
    "zero batch size": Bad(
        "generation: batch_size must be at least 1, got 0", {"generation": {**GEN, "batch_size": 0}}
    ),
    "zero new tokens": Bad(
        "max_new_tokens must be at least 1", {"generation": {**GEN, "max_new_tokens": 0}}
    ),
    "nan top_p": Bad(
        "generation.top_p: expected a finite number, got nan", {"generation": {**GEN, "top_p": NAN}}
    ),
    "nan fluency budget": Bad(
        "selection.fluency_budget: expected a finite number, got nan",
        {"selection": {"fluency_budget": NAN}},
    ),
    "inf fluency budget": Bad(
        "selection.fluency_budget: expected a finite number, got inf",
        {"selection": {"fluency_budget": INF}},
    ),
    "fluency budget below 1": Bad(
        "fluency_budget must be >= 1", {"selection": {"fluency_budget": 0.5}}
    ),
    "unknown test_strengths": Bad(
        "test_strengths must be 'chosen' or 'all'", {"selection": {"test_strengths": "some"}}
    ),
    "nan strength": Bad(
        "methods[0].strengths[1]: expected a finite number, got nan",
        {"methods": [{**M, "strengths": [1, NAN]}]},
    ),
    "inf strength": Bad(
        "methods[0].strengths[0]: expected a finite number, got inf",
        {"methods": [{**M, "strengths": [INF]}]},
    ),
    "no strengths": Bad("strengths = [] sweeps nothing", {"methods": [{**M, "strengths": []}]}),
    "text strength": Bad(
        "methods[0].strengths[0]: expected a number, got 'high'",
        {"methods": [{**M, "strengths": ["high"]}]},
    ),
    "nan method parameter": Bad(
        "selfcontrol).params.step_size: expected a finite number, got nan",
        {"methods": [{"name": "selfcontrol", "params": {"step_size": NAN}}]},
    ),
    "inf layer": Bad(
        "(caa).params.layer: inf has the wrong type (expected int or",
        {"methods": [{"name": "caa", "params": {"layer": INF}}]},
    ),
    "unknown dtype": Bad(
        "model: unknown dtype 'float8'", {"model": {"name": "{model}", "dtype": "float8"}}
    ),
    "empty model name": Bad("model: name must not be empty", {"model": {"name": ""}}),
    "negative testbed seed": Bad(
        "testbed_seed -1 is out of range", {"model": {"name": "testbed", "testbed_seed": -1}}
    ),
    # ---- the experiment file itself
    "not UTF-8": Bad(
        "not UTF-8 text (TOML files are UTF-8): byte 0xe9", raw=b"seeds = [0]\n# caf\xe9\n"
    ),
    "not TOML": Bad("not valid TOML", raw=b"[model\nname = 'x'\n"),
    # ---- the device
    "unknown device": Bad(
        "model.device 'gpu' is not a device name torch knows",
        {"model": {"name": "{model}", "device": "gpu"}},
    ),
    "device steerbench does not run on": Bad(
        "model.device 'meta': steerbench runs on cpu, cuda, mps",
        {"model": {"name": "{model}", "device": "meta"}},
    ),
    "cuda device this machine lacks": Bad(
        "model.device 'cuda:99': this machine has",
        {"model": {"name": "{model}", "device": "cuda:99"}},
    ),
    # ---- the model
    "model folder without config": Bad(
        "local model folder {tmp}/broken-model has no config.json", model=_no_config
    ),
    "model folder with a broken config": Bad(
        "config.json is broken (Expecting value", model=_broken_config
    ),
    "model folder of an unknown architecture": Bad(
        "config.json is broken (", model=_unknown_model_type
    ),
    "model folder without weights": Bad(
        "local model folder {tmp}/broken-model has no weights", model=_no_weights
    ),
    "model folder with truncated weights": Bad(
        "model.safetensors is truncated", model=_truncated_weights
    ),
    "model that is a file": Bad("model.name '{tmp}/model.bin' is a file", model=_model_is_a_file),
    "hub id not cached": Bad(
        "not a local directory and not in the Hugging Face cache",
        {"model": {"name": "no-such-org/no-such-model-xyz"}},
    ),
    "evaluator folder without weights": Bad(
        "local model folder {tmp}/broken-model has no weights",
        {"evaluator": "{tmp}/broken-model"},
        model=lambda m, t: (_no_weights(m, t), str(m))[1],
    ),
    # ---- data files
    "data records that are arrays": Bad(
        "prompts.jsonl: record 1 is a JSON array, not an object",
        _sentiment_from("prompts.jsonl"),
        prepare=_data("[1, 2]\n"),
    ),
    "data records that are numbers": Bad(
        "prompts.json: record 2 is a JSON number, not an object",
        _sentiment_from("prompts.json"),
        prepare=_data('[{"a": 1}, 3]', "prompts.json"),
    ),
    "data file holding one number": Bad(
        "prompts.json: expected a list of records, got JSON number",
        _sentiment_from("prompts.json"),
        prepare=_data("5", "prompts.json"),
    ),
    "data file that is not JSON": Bad(
        "cannot read {tmp}/prompts.jsonl",
        _sentiment_from("prompts.jsonl"),
        prepare=_data("{not json\n"),
    ),
    "data file that is not UTF-8": Bad(
        "cannot read {tmp}/prompts.jsonl",
        _sentiment_from("prompts.jsonl"),
        prepare=_data(b'{"a": "caf\xe9"}\n'),
    ),
    "data source that does not exist": Bad(
        "is neither 'testbed', 'builtin', 'hub' nor an existing file",
        _sentiment_from("missing.jsonl"),
    ),
    # ---- the output folder
    "output folder that is a file": Bad(
        "output folder {tmp}/taken is a file",
        args=("-o", "{tmp}/taken"),
        prepare=_data("x", "taken"),
    ),
    "output folder below a file": Bad(
        "output folder {tmp}/taken/run lies below {tmp}/taken, which is a file",
        args=("-o", "{tmp}/taken/run"),
        prepare=_data("x", "taken"),
    ),
    "output folder that cannot be written": Bad(
        "cannot write to output folder /proc/steerbench-test", args=("-o", "/proc/steerbench-test")
    ),
    "output folder holding other files": Bad(
        "{tmp}/run holds files steerbench did not write (notes.txt)",
        prepare=_data("mine", "run/notes.txt"),
    ),
    "output folder of another experiment": Bad(
        "holds the results of a different experiment (seeds[0]: 1 there, 0 here)",
        prepare=lambda tmp, model: _manifest_of(tmp, model, seeds=[1]),
    ),
    "output folder with an unreadable manifest": Bad(
        "run/manifest.json: not valid JSON", prepare=_data("{", "run/manifest.json")
    ),
}


def _manifest_of(tmp: Path, model: str, **changes: Any) -> None:
    """A run folder whose manifest records the base experiment with `changes`."""
    data = {**base_experiment(model), **changes, "output_dir": str(tmp / "run")}
    (tmp / "run").mkdir(parents=True, exist_ok=True)
    manifest = {"schema": 2, "status": "complete", "experiment": parse(Experiment, data).to_dict()}
    (tmp / "run" / "manifest.json").write_text(json.dumps(manifest))


def _fill(value: Any, **names: str) -> Any:
    if isinstance(value, str):  # not str.format: random values hold braces of their own
        for name, text in names.items():
            value = value.replace(f"{{{name}}}", text)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, **names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, **names) for v in value]
    return value


def run_cli(tmp: Path, text: str | bytes, *args: str) -> int:
    path = tmp / "exp.toml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return main(["run", str(path), "-q", *(args or ("-o", str(tmp / "run")))])


def test_the_table_has_at_least_40_bad_inputs():
    assert len(BAD_INPUTS) >= 40


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(name, tmp_path, model_dir, capsys, monkeypatch):
    bad = BAD_INPUTS[name]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if name == "cuda device this machine lacks" and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 CUDA devices")
    model = bad.model(model_dir, tmp_path) if bad.model else str(model_dir)
    if bad.prepare:
        (tmp_path / "run").mkdir(exist_ok=True)
        bad.prepare(tmp_path, model)
    names = {"tmp": str(tmp_path), "model": model}
    text = bad.raw or toml_text(_fill({**base_experiment(model), **bad.changes}, **names))
    loaded = []

    def load_weights(*args, **kwargs):
        loaded.append(args)
        raise AssertionError("the model's weights began to load")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", load_weights)
    assert run_cli(tmp_path, text, *(_fill(list(bad.args), **names))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("steerbench: error: ")
    assert _fill(bad.message, **names) in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not loaded  # found before any weights loaded


def test_the_base_experiment_runs(tmp_path, model_dir, capsys):
    """The table's inputs fail for the reason they name: unchanged, the experiment runs."""
    assert run_cli(tmp_path, toml_text(base_experiment(str(model_dir)))) == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert "Loading weights" not in capsys.readouterr().err  # -q: transformers' bar too


def test_hub_and_local_folder_hints_differ(tmp_path, model_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _no_weights(model_dir, tmp_path)
    assert run_cli(tmp_path, toml_text(base_experiment(folder))) == 2
    err = capsys.readouterr().err
    assert (
        "local model folder" in err and "hf download" not in err and "Hugging Face cache" not in err
    )


# ------------------------------------------------------------------ run folders
def test_a_second_run_into_a_locked_folder_fails_at_once(tmp_path, model_dir, capsys):
    exp = base_experiment(str(model_dir))
    first = RunDir(tmp_path / "run")
    first.claim(_fill(exp))  # another run holds the folder
    try:
        assert run_cli(tmp_path, toml_text(exp)) == 2
        err = capsys.readouterr().err
        assert f"is in use by another steerbench run (pid {os.getpid()})" in err
        assert run_cli(tmp_path, toml_text(exp), "-o", str(tmp_path / "run"), "--force") == 2
    finally:
        first.release()
    assert run_cli(tmp_path, toml_text(exp)) == 0  # released: the folder is free again


def test_two_runs_at_once_one_writes_the_other_is_refused(tmp_path, model_dir, monkeypatch):
    """Two threads start the same run into one folder: exactly one gets it (flock)."""
    from bench import cli

    exp = tmp_path / "exp.toml"
    exp.write_text(toml_text(base_experiment(str(model_dir))))
    started, release = threading.Barrier(2), threading.Event()
    real = cli._sweep

    def held_sweep(*args):
        started.wait(timeout=30)  # both runs got past their checks, one holds the lock
        release.wait(timeout=30)
        return real(*args)

    monkeypatch.setattr(cli, "_sweep", held_sweep)
    codes: list[int] = []

    def run() -> None:
        codes.append(main(["run", str(exp), "-q", "-o", str(tmp_path / "run")]))
        if codes[-1] == 2:
            started.wait(timeout=30)  # the refused one lets the holder go on
            release.set()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(codes) == [0, 2]


def test_force_writes_into_a_folder_of_another_experiment_and_reuses_cells(tmp_path, model_dir):
    exp = base_experiment(str(model_dir))
    assert run_cli(tmp_path, toml_text(exp)) == 0
    cells = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "cells").iterdir()}
    assert run_cli(tmp_path, toml_text(exp)) == 0  # the same experiment resumes
    other = {**exp, "methods": [{"name": "prompting", "strengths": [1, 2]}]}
    assert run_cli(tmp_path, toml_text(other)) == 2
    assert run_cli(tmp_path, toml_text(other), "-o", str(tmp_path / "run"), "--force") == 0
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "cells").iterdir()}
    assert {k: after[k] for k in cells} == cells  # nothing that still applies was recomputed
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["experiment"]["methods"][0]["strengths"] == [1, 2]


def test_force_leaves_other_files_alone(tmp_path, model_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    exp = toml_text(base_experiment(str(model_dir)))
    assert run_cli(tmp_path, exp, "-o", str(tmp_path / "run"), "--force") == 0
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def _stop_during_run(monkeypatch, stop: Callable[[], None]) -> None:
    """Runner.run writes one cell's worth of work, then `stop` happens."""
    from bench.runner import Runner

    def run(self) -> None:
        self.run_dir.begin()
        stop()

    monkeypatch.setattr(Runner, "run", run)


def _status(tmp: Path) -> str:
    return json.loads((tmp / "run" / "manifest.json").read_text())["status"]


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100):  # the handler runs between two bytecodes of this loop
        time.sleep(0.01)
    raise AssertionError("SIGTERM did not stop the run")


def _ctrl_c() -> None:
    raise KeyboardInterrupt


def _fail() -> None:
    raise RuntimeError("a bug")


def _user_error() -> None:
    raise UserError("a problem found late")


STOPS: dict[str, tuple[Callable[[], None], int | type, str]] = {
    "SIGTERM": (_sigterm, 128 + signal.SIGTERM, "interrupted"),
    "Ctrl-C": (_ctrl_c, 130, "interrupted"),
    "user error": (_user_error, 2, "failed"),
    "bug": (_fail, RuntimeError, "failed"),
}


@pytest.mark.parametrize("name", list(STOPS))
def test_the_manifest_says_how_the_run_ended(name, tmp_path, model_dir, monkeypatch, capsys):
    stop, outcome, status = STOPS[name]
    _stop_during_run(monkeypatch, stop)
    exp = toml_text(base_experiment(str(model_dir)))
    if isinstance(outcome, int):
        assert run_cli(tmp_path, exp) == outcome
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    else:
        with pytest.raises(outcome):  # a bug keeps its traceback, and the manifest tells
            run_cli(tmp_path, exp)
    assert _status(tmp_path) == status
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone


# ------------------------------------------------------------------ healing
def _fit() -> State:
    return State({"vector.1": torch.arange(8.0)}, {"layers": [1]})


DAMAGES: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "flipped byte": lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])),
    "not safetensors": lambda p: p.write_text("hello"),
    "foreign safetensors": lambda p: __import__("safetensors.torch").torch.save_file(
        {"x": torch.ones(2)}, str(p)
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cached_state_is_moved_aside_and_fitted_again(damage, tmp_path):
    cache = StateCache(tmp_path)
    state, cached = cache.get_or_fit("k", _fit)
    assert not cached
    DAMAGES[damage](cache.path("k"))
    with pytest.warns(SteerbenchWarning, match=r"k\.safetensors.*moved aside"):
        again, cached = cache.get_or_fit("k", _fit)
    assert not cached and torch.equal(again.tensors["vector.1"], state.tensors["vector.1"])
    assert (tmp_path / "k.safetensors.corrupt").exists()
    assert cache.get_or_fit("k", _fit)[1]  # healed: cached from now on


def test_damaged_cells_and_states_heal_on_the_next_run(tmp_path, model_dir, capsys):
    exp = toml_text(base_experiment(str(model_dir)))
    assert run_cli(tmp_path, exp) == 0
    run = tmp_path / "run"
    first = {json.loads(line)["id"]: json.loads(line) for line in (run / "cells.jsonl").open()}
    cell, other = sorted(first)[:2]
    _truncate(run / "cells" / f"{cell}.json")
    _truncate(run / "records" / f"{other}.jsonl", keep=0.7)
    (fit,) = json.loads((run / "fits.json").read_text())
    _truncate(StateCache().path(fit["state"]))
    capsys.readouterr()
    assert run_cli(tmp_path, exp) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("steerbench: warning: ") for line in err)
    assert sum("moved aside" in line for line in err) == 3
    assert (run / "cells" / f"{cell}.json.corrupt").exists()
    assert (run / "records" / f"{other}.jsonl.corrupt").exists()
    again = {json.loads(line)["id"]: json.loads(line) for line in (run / "cells.jsonl").open()}
    assert set(again) == set(first)
    for key in (cell, other):
        assert again[key]["metrics"] == first[key]["metrics"]  # recomputed, the same numbers
    assert json.loads((run / "fits.json").read_text())[0]["cached"] is False


def test_a_truncated_results_file_names_its_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"a": 1}\n{"b": ')
    with pytest.raises(UserError, match=r"records\.jsonl:2: not valid JSON"):
        list(read_jsonl(path))


# ------------------------------------------------------------------ quiet and warnings
def test_quiet_silences_transformers_while_it_lasts(tmp_path, model_dir, monkeypatch):
    from transformers.utils import logging

    import bench.sources

    seen = []
    real = bench.sources.Subject.load

    def load(*args, **kwargs):
        seen.append(logging.is_progress_bar_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(bench.sources.Subject, "load", load)
    assert run_cli(tmp_path, toml_text(base_experiment(str(model_dir)))) == 0
    assert seen == [False] and logging.is_progress_bar_enabled()


def test_method_warnings_are_one_clean_line(tmp_path, model_dir, monkeypatch, capsys):
    import warnings

    from methods.prompting import Prompting

    real = Prompting.fit

    def fit(self, subject, target):
        warnings.warn("prompting: something the user should know", stacklevel=2)
        return real(self, subject, target)

    monkeypatch.setattr(Prompting, "fit", fit)
    monkeypatch.setenv("STEERBENCH_CACHE", str(tmp_path / "cache"))  # fit, not a cached state
    assert run_cli(tmp_path, toml_text(base_experiment(str(model_dir)))) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["steerbench: warning: prompting: something the user should know"]


# ------------------------------------------------------------------ a property
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=8),  # TOML has no surrogates
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
# Values that fit each key, so that a fair share of experiments pass every check: the property
# is about both ways out.
FITTING = {
    "seeds": st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3, unique=True),
    "perplexity_cap": st.floats(1.0, 1e6),
    "threads": st.integers(0, 4),
    "report": st.booleans(),
    "evaluator": st.just("{model}"),
    "output_dir": st.just("{tmp}/run"),
    "max_new_tokens": st.integers(1, 8),
    "temperature": st.floats(0.0, 2.0),
    "top_p": st.floats(0.01, 1.0),
    "batch_size": st.integers(1, 64),
    "fluency_budget": st.floats(1.0, 10.0),
    "test_strengths": st.sampled_from(["chosen", "all"]),
    "dtype": st.sampled_from(["float32", "bfloat16"]),
    "device": st.just("cpu"),
    "testbed_seed": st.integers(0, 3),
    "trust_remote_code": st.booleans(),
}
SECTIONS = {
    "": ["seeds", "perplexity_cap", "threads", "report", "evaluator", "output_dir", "sedes"],
    "generation": ["max_new_tokens", "temperature", "top_p", "batch_size", "top_k"],
    "selection": ["fluency_budget", "test_strengths"],
    "model": ["dtype", "device", "testbed_seed", "trust_remote_code", "revision"],
}
PROMPT = st.fixed_dictionaries({"prompt": st.fixed_dictionaries({"text": SCALARS})})
RECORDS = st.lists(
    st.one_of(
        PROMPT,
        st.dictionaries(st.sampled_from(["prompt", "text", "polarity"]), SCALARS, max_size=3),
        SCALARS,
        st.lists(SCALARS, max_size=2),
    ),
    max_size=4,
)


@st.composite
def experiments(draw) -> tuple[dict[str, Any], list[Any] | None]:
    """A base experiment with a few values put in, mostly ones that fit their key, else anything
    (any type, NaN, inf, huge, empty, unknown keys), and maybe a data file of random records
    for a suite to read."""
    exp = base_experiment("{model}")
    for section, keys in SECTIONS.items():
        for key in draw(st.lists(st.sampled_from(keys), max_size=1)):
            fitting = FITTING.get(key)
            value = draw(VALUES if fitting is None or draw(st.integers(0, 2)) == 0 else fitting)
            if section:
                exp[section] = {**exp.get(section, {}), key: value}
            else:
                exp[key] = value
    if draw(st.booleans()):
        strengths = st.lists(st.floats(-8, 8), max_size=3) | st.lists(SCALARS, max_size=3)
        exp["methods"] = [{**M, "strengths": draw(strengths)}]
    records = draw(RECORDS) if draw(st.integers(0, 2)) == 0 else None
    if records is not None:
        exp.update(_sentiment_from("data.jsonl"))
    return exp, records


class Loaded(BaseException):
    """Every check passed: the model would load now (too slow for a property test)."""


@hypothesis.settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(case=experiments())
def test_any_experiment_either_loads_or_fails_in_one_line(
    case, tmp_path_factory, model_dir, monkeypatch
):
    """exit 2 with one line, or every check passes and the model loads; never a traceback,
    never a file written outside the run folder."""
    import contextlib
    import io

    exp, records = case
    tmp = tmp_path_factory.mktemp("prop")
    if records is not None:
        (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    def load_subject(*args, **kwargs):
        raise Loaded

    monkeypatch.setattr("bench.sources.load_subject", load_subject)
    before = set(tmp.iterdir())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = run_cli(tmp, toml_text(_fill(exp, tmp=str(tmp), model=str(model_dir))))
        except Loaded:
            code = None
    hypothesis.event("all checks passed" if code is None else "exit 2")
    written = set(tmp.iterdir()) - before - {tmp / "exp.toml", tmp / "run"}
    assert not written
    if code is not None:
        lines = err.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("steerbench: error: ")
    else:  # it parsed: the experiment file reads back as an Experiment
        assert isinstance(load_experiment(tmp / "exp.toml"), Experiment)
