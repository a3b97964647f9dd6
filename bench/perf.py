"""Steering cost benchmark: steered / unsteered generation time, measured in one run.

For each method: fit it on one task's steering target, then answer the same cell of that task
(`bench.evaluate.answer_cell`: the same examples at the same batch size, greedy, every
generation exactly `--tokens` long so both do equal work) with and without steering, alternating
the order over several repeats, and report the ratio of the fastest repeats' answering time per
generated token next to the method's declared `cost_budget`. Timings on a shared machine are noisy;
the ratio of two measurements taken side by side in one process is what this script is for,
not timed tests.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from bench.config import GenerationConfig, ModelConfig
from bench.errors import UserError
from bench.evaluate import Evaluation, Steer, answer_cell, steering
from bench.registry import METHODS, TASKS
from bench.sources import load_subject
from bench.target import SteeringTarget
from bench.task import Example, Generate, Task


def task_examples(task: Task, n: int) -> tuple[list[Example], SteeringTarget]:
    """`n` examples (repeated if the task has fewer) that generate and share one steering
    target, so that one fitted state steers them all."""
    splits = task.load()
    examples = (*splits.select, *splits.test)
    target = task.target(examples[0], splits)
    usable = [
        ex
        for ex in examples
        if task.target(ex, splits).name == target.name
        and any(isinstance(r, Generate) for r in task.requests(ex))
    ]
    if not usable:
        raise UserError(f"task {task.name} has no generation prompts")
    return (usable * (n // len(usable) + 1))[:n], target


def generation_seconds(
    evaluation: Evaluation, task: Task, examples, target, steer: Steer | None
) -> tuple[float, int]:
    """Time spent answering `examples` as a cell does (`answer_cell`: its requests under
    steering; no scoring), and the tokens generated."""
    cost = answer_cell(evaluation, task, examples, [target] * len(examples), steer, 0).cost
    return cost.seconds, cost.generated_tokens


def benchmark(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(0)
    subject = load_subject(ModelConfig(name=args.model), progress=False)
    task = TASKS.get(args.task)()
    examples, target = task_examples(task, args.batch)
    # Greedy and exactly `--tokens` long: steered and unsteered answers do the same work.
    generation = GenerationConfig(
        max_new_tokens=args.tokens, temperature=0.0, batch_size=args.batch
    )
    evaluation = Evaluation(subject, generation, perplexity_cap=math.inf, exact_length=args.tokens)
    names = args.methods.split(",") if args.methods else METHODS.names()
    rows = []
    for name in names:
        cls = METHODS.get(name)
        method = cls()
        if not method.applies_to(target):
            rows.append({"method": name, "skipped": f"target {target.name} lacks what it needs"})
            continue
        start = time.perf_counter()
        state = method.fit(subject, target)
        fit_seconds = time.perf_counter() - start
        strength = max(cls.default_strengths)
        conditions = {
            "unsteered": None,
            "steered": steering(method, subject, {target.name: state}, strength),
        }
        times: dict[str, list[float]] = {c: [] for c in conditions}
        tokens = {}
        for steer in conditions.values():  # warm-up both paths
            generation_seconds(evaluation, task, examples, target, steer)
        for repeat in range(args.repeats):
            order = list(conditions.items())
            for condition, steer in order if repeat % 2 == 0 else reversed(order):
                seconds, tokens[condition] = generation_seconds(
                    evaluation, task, examples, target, steer
                )
                times[condition].append(seconds)
        # The fastest repeat of each: on a shared machine noise only ever adds time, so the
        # minimum is the least disturbed measurement (as `timeit` advises).
        base = min(times["unsteered"]) / max(tokens["unsteered"], 1)
        steer = min(times["steered"]) / max(tokens["steered"], 1)
        rows.append(
            {
                "method": name,
                "strength": strength,
                "fit_seconds": round(fit_seconds, 3),
                "unsteered_ms_per_token": round(1000 * base, 4),
                "steered_ms_per_token": round(1000 * steer, 4),
                "ratio": round(steer / base, 4),
                "budget": cls.cost_budget,
                "within_budget": None
                if cls.cost_budget is None
                else steer / base <= cls.cost_budget,
            }
        )
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'method':<18} {'fit s':>8} {'base ms/tok':>12} {'steer ms/tok':>13} {'ratio':>7} {'budget':>7}  verdict"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['method']:<18} skipped: {r['skipped']}")
            continue
        budget = "-" if r["budget"] is None else f"{r['budget']:.2f}"
        verdict = {None: "(no budget)", True: "PASS", False: "FAIL"}[r["within_budget"]]
        lines.append(
            f"{r['method']:<18} {r['fit_seconds']:>8.2f} {r['unsteered_ms_per_token']:>12.3f} "
            f"{r['steered_ms_per_token']:>13.3f} {r['ratio']:>7.3f} {budget:>7}  {verdict}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="testbed", help="hub id, local dir or 'testbed'")
    parser.add_argument(
        "--task", default="sentiment", help="task whose target and prompts are used"
    )
    parser.add_argument("--methods", help="comma-separated methods (default: all registered)")
    parser.add_argument("--batch", type=int, default=64, help="prompts per batch")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per prompt")
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per condition")
    parser.add_argument("--json", dest="json_out", help="also write the rows as JSON here")


def run(args: argparse.Namespace) -> int:
    rows = benchmark(args)
    print(format_rows(rows))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 1 if any(r.get("within_budget") is False for r in rows) else 0
