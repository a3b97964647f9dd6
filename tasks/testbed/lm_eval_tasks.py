"""The testbed's capability tasks as lm-eval task configs, over data files written next to them.

    lm_eval --model steerbench --model_args pretrained=testbed \
        --include_path DIR --tasks testbed_facts,testbed_grammar,testbed_reading,testbed_text

`write_tasks(DIR, data)` writes, for each task, `NAME.train.jsonl`, `NAME.test.jsonl` and
`NAME.yaml` (a config lm-eval finds through `--include_path DIR`; the data files are named by
absolute path, since lm-eval resolves `data_files` against the working directory, not the
config). All four carry the tag `testbed`, so `--tasks testbed` runs them together.

The configs are lm-eval's own format (Jinja templates over the record fields): what a record
looks like is the table below, and the testbed's records (`testbed_capability_records`) and the
tests' tiny ones are written in it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TAG = "testbed"
SPLITS = ("train", "test")  # few-shot examples come from train, scored items from test


@dataclass(frozen=True)
class LmEvalTask:
    name: str
    fields: tuple[str, ...]  # what each record holds
    summary: str
    config: Mapping[str, Any]  # the lm-eval config, less name, tag and data files


# One row per task: how lm-eval asks and scores it.
TASKS: tuple[LmEvalTask, ...] = (
    LmEvalTask(
        "testbed_facts",
        ("question", "choices", "answer"),
        "the knowledge base's facts as multiple choice (answer: the index of the true object)",
        {
            "output_type": "multiple_choice",
            "doc_to_text": "{{question}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{answer}}",
            "target_delimiter": " ",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        },
    ),
    LmEvalTask(
        "testbed_grammar",
        ("good", "bad"),
        "grammatical vs ungrammatical sentence pairs, BLiMP-style (the good one more likely)",
        {
            "output_type": "multiple_choice",
            "doc_to_text": "",
            "doc_to_choice": "{{[good, bad]}}",
            "doc_to_target": 0,
            "target_delimiter": "",
            "num_fewshot": 0,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        },
    ),
    LmEvalTask(
        "testbed_reading",
        ("passage", "question", "answer"),
        "in-context reading: a passage states a made-up fact, the question asks for it",
        {
            "output_type": "generate_until",
            "doc_to_text": "{{passage}} {{question}}",
            "doc_to_target": "{{answer}}",
            "target_delimiter": " ",
            "generation_kwargs": {"until": ["\n", "."], "max_gen_toks": 8, "do_sample": False},
            "filter_list": [
                {
                    "name": "strip",
                    "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}],
                }
            ],
            "metric_list": [
                {
                    "metric": "exact_match",
                    "aggregation": "mean",
                    "higher_is_better": True,
                    "ignore_case": True,
                    "ignore_punctuation": True,
                }
            ],
        },
    ),
    LmEvalTask(
        "testbed_text",
        ("text",),
        "held-out corpus documents scored as language modelling (rolling log-likelihood)",
        {
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "{{text}}",
            "num_fewshot": 0,
            "metric_list": [
                {"metric": m, "aggregation": a, "higher_is_better": False}
                for m, a in (
                    ("word_perplexity", "weighted_perplexity"),
                    ("byte_perplexity", "weighted_perplexity"),
                    ("bits_per_byte", "bits_per_byte"),
                )
            ],
        },
    ),
)
BY_NAME = {task.name: task for task in TASKS}


def config(task: LmEvalTask, directory: Path) -> dict[str, Any]:
    """The full lm-eval config of `task` over its data files in `directory`."""
    files = {split: str((directory / f"{task.name}.{split}.jsonl").resolve()) for split in SPLITS}
    return {
        "task": task.name,
        "tag": [TAG],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": files},
        "training_split": "train",
        "fewshot_split": "train",
        "test_split": "test",
        **task.config,
        "metadata": {"version": 1.0},
    }


def write_tasks(
    directory: str | Path, data: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]
) -> Path:
    """Write each task in `data` ({name: {split: records}}) as data files plus its config."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, splits in data.items():
        task = BY_NAME[name]
        for split in SPLITS:
            records = splits[split]
            for record in records:
                if set(record) != set(task.fields):
                    raise ValueError(f"{name}: a record has {sorted(record)}, not {task.fields}")
            lines = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in records)
            (directory / f"{name}.{split}.jsonl").write_text(lines)
        text = yaml.safe_dump(config(task, directory), sort_keys=False, allow_unicode=True)
        (directory / f"{name}.yaml").write_text(text)
    return directory
