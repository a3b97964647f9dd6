"""Steering cost benchmark: steered / unsteered generation time, measured in one run.

For each method: fit it on one task's steering target, then answer the same cell of that task
(`bench.evaluate.answer_cell`: the same examples at the same batch size, greedy, every
generation exactly `--tokens` long so both do equal work) with and without steering, alternating
the order over several repeats, and report the ratio of the fastest repeats' answering time per
generated token next to the method's declared `cost_budget`. Timings on a shared machine are noisy;
the ratio of two measurements taken side by side in one process is what this script is for,
not timed tests.

With `--processes N` it also measures data-parallel scaling: the same examples answered (greedy,
fixed length) by this one process on every CPU thread, then by N launched processes
(`bench.distributed.launch`, each on its share of the threads) that shard them as a run shards a
cell; printed as the ratio of the two throughputs at equal work, with the machine's CPU count.
Likewise one lm-eval evaluation of the model's own capability tasks (the testbed's), its
documents shared among the N processes as a run shares them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

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


def _scaling_setup(args: argparse.Namespace):
    """What each side of the scaling measurement answers: the same examples, greedy, every
    generation exactly `--tokens` long, unsteered."""
    subject = load_subject(ModelConfig(name=args.model), progress=False)
    task = TASKS.get(args.task)()
    examples, target = task_examples(task, args.batch * args.processes * args.scaling_batches)
    generation = GenerationConfig(
        max_new_tokens=args.tokens, temperature=0.0, batch_size=args.batch
    )
    evaluation = Evaluation(subject, generation, perplexity_cap=math.inf, exact_length=args.tokens)
    return evaluation, task, examples, target


def _timed_share(args: argparse.Namespace, group) -> dict:
    """Wall seconds (from the first rank's start to the last rank's end) and tokens generated
    by all of answering the scaling examples, each rank its shard; then the seconds of one
    lm-eval evaluation of the model's own capability tasks, shared among the ranks as a run
    shares it (None for a model that names no tasks)."""
    evaluation, task, examples, target = _scaling_setup(args)
    mine = group.shard(len(examples), args.batch)
    share = examples[mine.start : mine.stop]
    generation_seconds(evaluation, task, share[: args.batch], target, None)  # warm-up
    group.barrier()
    start = time.perf_counter()
    _, tokens = generation_seconds(evaluation, task, share, target, None)
    group.barrier()
    wall = time.perf_counter() - start
    counts = group.gather(tokens)
    return {
        "seconds": wall,
        "tokens": sum(counts) if counts is not None else 0,
        "capability_seconds": _timed_capability(evaluation.subject, group),
    }


def _timed_capability(subject, group) -> float | None:
    """Wall seconds of one lm-eval evaluation of `subject`'s own capability tasks, unsteered,
    every rank of `group` taking part (after an untimed one that loads the tasks' data)."""
    from bench.capability import evaluate_capability, resolve, task_manager
    from bench.config import CapabilityConfig
    from bench.lm_eval_model import Steering

    config = resolve(CapabilityConfig(), subject.capability_tasks)
    if config is None:
        return None
    manager = task_manager(config)
    evaluate_capability(subject, Steering(), config, manager, group)
    group.barrier()
    start = time.perf_counter()
    evaluate_capability(subject, Steering(), config, manager, group)
    group.barrier()
    return time.perf_counter() - start


def _scaling_worker(args: argparse.Namespace) -> int:
    """One launched rank of the scaling measurement; rank 0 writes the result."""
    from bench.distributed import from_environment

    group = from_environment("cpu")
    try:
        measured = _timed_share(args, group)
        if group.main:
            Path(args.scaling_out).write_text(json.dumps(measured))
    finally:
        group.close()
    return 0


def scaling(args: argparse.Namespace) -> dict:
    """Throughput of 1 vs `args.processes` processes at equal work (see the module's docstring)."""
    from bench.distributed import SINGLE, launch

    one = _timed_share(args, SINGLE)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scaling.json"
        argv = ["bench", "--model", args.model, "--task", args.task, "--batch", str(args.batch)]
        argv += ["--tokens", str(args.tokens), "--processes", str(args.processes)]
        argv += ["--scaling-batches", str(args.scaling_batches), "--scaling-out", str(out)]
        if launch(args.processes, argv) != 0:
            raise UserError(f"the {args.processes}-process scaling measurement failed")
        many = json.loads(out.read_text())
    one_rate = one["tokens"] / one["seconds"]
    many_rate = many["tokens"] / many["seconds"]
    row = {
        "processes": args.processes,
        "cpus": os.cpu_count(),
        "tokens": one["tokens"],
        "one_process_tokens_per_second": round(one_rate, 2),
        "n_processes_tokens_per_second": round(many_rate, 2),
        "ratio": round(many_rate / one_rate, 3),
    }
    if one["capability_seconds"] is not None:
        row["capability_one_process_seconds"] = round(one["capability_seconds"], 3)
        row["capability_n_processes_seconds"] = round(many["capability_seconds"], 3)
        row["capability_ratio"] = round(one["capability_seconds"] / many["capability_seconds"], 3)
    return row


def format_scaling(row: dict) -> str:
    lines = [
        f"scaling: {row['processes']} processes / 1 process throughput = {row['ratio']:.2f} "
        f"({row['n_processes_tokens_per_second']:.1f} vs {row['one_process_tokens_per_second']:.1f}"
        f" tokens/s, {row['tokens']} tokens each, on {row['cpus']} CPUs)"
    ]
    if "capability_ratio" in row:
        lines.append(
            f"scaling: lm-eval evaluation of the model's capability tasks, {row['processes']} "
            f"processes / 1 process throughput = {row['capability_ratio']:.2f} "
            f"({row['capability_n_processes_seconds']:.2f} vs "
            f"{row['capability_one_process_seconds']:.2f} s)"
        )
    return "\n".join(lines)


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
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="also measure data-parallel scaling: throughput of 1 vs N processes at equal work",
    )
    parser.add_argument(
        "--scaling-batches",
        type=int,
        default=2,
        help="batches per process in the scaling measurement (work: batch x N x this)",
    )
    parser.add_argument(
        "--scaling-only", action="store_true", help="measure scaling only, not steering cost"
    )
    parser.add_argument("--scaling-out", help=argparse.SUPPRESS)  # a launched rank's result


def run(args: argparse.Namespace) -> int:
    if args.scaling_out:
        return _scaling_worker(args)
    rows = [] if args.scaling_only else benchmark(args)
    if rows:
        print(format_rows(rows))
    result: dict = {"steering": rows}
    if args.processes > 1:
        result["scaling"] = scaling(args)
        print(format_scaling(result["scaling"]))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(rows if args.processes <= 1 else result, handle, indent=2)
    return 1 if any(r.get("within_budget") is False for r in rows) else 0
