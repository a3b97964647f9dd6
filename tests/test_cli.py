"""CLI: one-line errors with exit code 2 for bad input; list; an end-to-end run on a tiny model."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.registry import TASKS
from tests.toy_task import ToyTask

BAD_EXPERIMENTS = [
    ("seeds = [0]\nsedes = [1]\n", ": unknown key 'sedes' (did you mean 'seeds'?)"),
    ("[[methods]]\nname = 'promptng'\n", "unknown method 'promptng' (did you mean 'prompting'?)"),
    (
        "[[methods]]\nname = 'prompting'\nstrengths = 'high'\n",
        "methods[0].strengths: expected a list, got str",
    ),
    ("[generation]\nmax_new_tokens = 'ten'\n", "generation.max_new_tokens: expected an integer"),
    ("[generation]\ntop_p = 1.5\n", "top_p must be in (0, 1]"),
    (
        "[[methods]]\nname = 'prompting'\nparams = { max_demos = 2 }\n",
        "unknown key 'methods[0] (prompting).params.max_demos' (did you mean 'max_demonstrations'?)",
    ),
    ("[[tasks]]\nname = 'no_such_task'\n", "unknown task 'no_such_task'"),
    ("[model\nname = 'x'\n", "not valid TOML"),
    (
        "[model]\nname = 'no-such-org/no-such-model-xyz'\n",
        "cannot load model 'no-such-org/no-such-model-xyz'",
    ),
]


@pytest.mark.parametrize("text, message", BAD_EXPERIMENTS)
def test_bad_experiment_exits_2_with_one_line(tmp_path, capsys, text, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "exp.toml"
    path.write_text(text)
    assert main(["run", str(path), "-q", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_experiment_file(capsys, tmp_path):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "experiment file not found" in capsys.readouterr().err


def test_list_shows_methods_tasks_and_parameters(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "methods:" in out and "tasks:" in out
    assert "prompting" in out and "max_demonstrations" in out
    assert "model sources" in out and "testbed" in out.split("model sources")[1]


def test_run_end_to_end_on_a_local_model_directory(tmp_path, gpt2_subject, capsys, monkeypatch):
    with TASKS.registered(ToyTask):
        model_dir = tmp_path / "model"
        gpt2_subject.model.save_pretrained(model_dir)
        gpt2_subject.tokenizer.save_pretrained(model_dir)
        exp = tmp_path / "exp.toml"
        exp.write_text(
            f"output_dir = '{tmp_path / 'run'}'\nreport = false\n"
            f"[model]\nname = '{model_dir}'\n[generation]\nmax_new_tokens = 3\n"
            "[[methods]]\nname = 'prompting'\nstrengths = [1]\n[[tasks]]\nname = 'toy'\nparams = { n = 2 }\n"
        )
        assert main(["run", str(exp), "-q"]) == 0
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        assert manifest["model"]["fingerprint"] == gpt2_subject.fingerprint()
        assert manifest["packages"]["torch"] and "wall_seconds" in manifest
        (toy,) = manifest["tasks"]
        assert toy["source"] == "built-in" and toy["sizes"] == {"fit": 2, "select": 2, "test": 2}
        # select: strengths 0 and 1; test: 0 and the chosen strength (which may be 0)
        assert (tmp_path / "run" / "cells.jsonl").read_text().count("\n") in (3, 4)
