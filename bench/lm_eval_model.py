"""steerbench as an lm-eval model: any registered method, a fitted state and a strength.

    lm_eval --model steerbench \
        --model_args pretrained=MODEL,method=caa,state=STATE.safetensors,strength=4 --tasks ...

`pretrained` is what `[model] name` takes (a hub id, a local directory or a registered model
source such as "testbed"). Further model_args name fields of the method's parameters (e.g.
`positions=all`); the rest of the parameters are those the state was fit with (its meta), else
the method's defaults. No method, or strength 0, is the unsteered subject exactly.

lm-eval 0.4.13 has no plugin entry points for model backends: the class is registered when this
module is imported, which `steerbench lm-eval ...` does before handing over to lm-eval's own
command line (`bench.cli`), and a Python caller does with `import bench.lm_eval_model`.

Every request goes through the Subject inside the method's steer context, so each method steers
here as it steers in steerbench's own suites (hooks, prompt transforms, overridden scoring or
generation alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval fills its registry lazily, only while it is empty)
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from bench.config import ModelConfig
from bench.distributed import SINGLE, Group, from_environment
from bench.errors import UserError, warn
from bench.method import Method
from bench.params import parse
from bench.state import State
from bench.subject import GenerationSettings, Subject

MODEL_NAME = "steerbench"


@dataclass(frozen=True)
class Steering:
    """What steers the subject: a method with its state at a strength (None: unsteered)."""

    method: Method | None = None
    state: State = field(default_factory=State)
    strength: float = 0.0

    def context(self, subject: Subject) -> AbstractContextManager[None]:
        if self.method is None:
            return nullcontext()
        return self.method.steer(subject, self.state, self.strength)


def build_steering(
    method: str | None, state: str | None, strength: float, params: dict[str, Any]
) -> Steering:
    """The method named `method` (from steerbench's registry) with the parameters the state at
    path `state` was fit with, overridden by `params`."""
    if method is None:
        if state is not None or params or strength != 0:
            raise UserError(
                "steerbench model: a state, a strength or method parameters need method=NAME"
            )
        return Steering()
    from bench.registry import METHODS

    cls = METHODS.get(method)
    loaded = State.load(state) if state is not None else State()
    if state is None and strength != 0:
        raise UserError(
            f"steerbench model: method={method} at strength {strength} needs state=PATH"
        )
    fitted_method = loaded.meta.get("method")
    if fitted_method not in (None, method):
        raise UserError(
            f"steerbench model: the state {state} was fit by '{fitted_method}', not '{method}'"
        )
    merged = {**loaded.meta.get("params", {}), **params}
    return Steering(cls(parse(cls.Params, merged, "model_args")), loaded, float(strength))


def _device(device: str | None) -> str:
    """The device to load on. lm-eval's command line asks for "cuda:0" unless told otherwise:
    "cuda" or "cuda:0" without CUDA is the CPU here, said in one line; any other device is the
    user's own choice and is checked on loading."""
    if device in (None, "cuda", "cuda:0") and not torch.cuda.is_available():
        if device is not None:
            warn("steerbench model: CUDA is not available; running on the CPU")
        return "cpu"
    return device or "cuda"


def _cut(text: str, until: Sequence[str]) -> str:
    """`text` up to its first stop sequence (lm-eval's `until`)."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text


@register_model(MODEL_NAME)
class SteerbenchLM(LM):
    def __init__(
        self,
        pretrained: str = "testbed",
        method: str | None = None,
        state: str | None = None,
        strength: float = 0.0,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: int | str | None = 16,
        max_batch_size: int | None = None,
        seed: int = 0,
        trust_remote_code: bool = False,
        revision: str | None = None,
        testbed_seed: int = 0,
        subject: Subject | None = None,
        steering: Steering | None = None,
        group: Group | None = None,
        **method_params: Any,
    ) -> None:
        """From model_args (`pretrained`, `method`, `state`, ...), or in-process from a loaded
        `subject` and a built `steering` (the capability suite).

        `group`: the processes that share lm-eval's requests (lm-eval's evaluator gives each
        rank every world_size-th document and gathers the results on rank 0). From model_args
        it is the launcher's (`accelerate launch -m bench lm-eval ...`), else one process."""
        super().__init__()
        from bench.sources import load_subject

        self.steering = steering or build_steering(method, state, float(strength), method_params)
        if group is None:
            group = from_environment(_device(device)) if subject is None else SINGLE
        self.group = group
        if subject is None:
            config = ModelConfig(
                name=str(pretrained),
                dtype=dtype,
                device=group.device(_device(device)),
                trust_remote_code=bool(trust_remote_code),
                revision=revision,
                testbed_seed=int(testbed_seed),
            )
            subject = load_subject(config, progress=False)
        self.subject = subject
        # "auto" asks lm-eval's HF model to probe memory; the Subject batches at a fixed size.
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.seed = int(seed)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**arg_dict, **extra)

    @property
    def tokenizer_name(self) -> str:
        return self.subject.tokenizer.name_or_path.replace("/", "__")

    # ------------------------------------------------------------------ data parallel
    # What lm-eval's evaluator calls to share requests among processes (LM's defaults are the
    # single process). Objects travel over the group's gloo connection, tensors included.
    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def world_size(self) -> int:
        return self.group.size

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's `tensor`, concatenated along the first dimension (a scalar counts as
        one element), on every rank."""
        parts = self.group.all_gather(tensor.detach().cpu())
        return torch.cat([torch.atleast_1d(p) for p in parts]).to(tensor.device)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        if dst != 0:
            raise ValueError("the steerbench model gathers on rank 0 only")
        return self.group.gather(obj)

    def barrier(self) -> None:
        self.group.barrier()

    # ------------------------------------------------------------------ requests
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        contexts, continuations = zip(*(r.args for r in requests)) if requests else ((), ())
        with self.steering.context(self.subject):
            scores = self.subject.logprobs(
                list(contexts), list(continuations), batch_size=self.batch_size
            )
        return [(s.logprob, s.is_greedy) for s in scores]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log p(text) from its first token (given the prefix token), as lm-eval's HF model
        scores a text that fits in one window; a longer text is refused (the Subject scores
        strings, and its windows would not be lm-eval's)."""
        texts = [r.args[0] for r in requests]
        limit = self.subject.max_length - 1
        for text in texts:
            n = len(self.subject.tokenizer(text, add_special_tokens=False)["input_ids"])
            if n > limit:
                raise UserError(
                    f"steerbench model: a rolling log-likelihood text of {n} tokens is longer "
                    f"than the model's window ({limit} after the prefix token)"
                )
        with self.steering.context(self.subject):
            scores = self.subject.logprobs([""] * len(texts), texts, batch_size=self.batch_size)
        return [s.logprob for s in scores]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests grouped by their generation settings, each group batched through
        `Subject.generate`; the text is cut at the first of the request's stop sequences."""
        groups: dict[tuple, list[int]] = {}
        settings: dict[tuple, tuple[GenerationSettings, tuple[str, ...]]] = {}
        for i, request in enumerate(requests):
            context, kwargs = request.args
            setting, until = self._settings(dict(kwargs))
            key = (setting, until)
            groups.setdefault(key, []).append(i)
            settings[key] = (setting, until)
        out: list[str] = [""] * len(requests)
        with self.steering.context(self.subject):
            for key, indices in groups.items():
                setting, until = settings[key]
                prompts = [requests[i].args[0] for i in indices]
                texts = self.subject.generate(prompts, setting)
                for i, samples in zip(indices, texts):
                    out[i] = _cut(samples[0], until)
        return out

    def _settings(self, kwargs: dict) -> tuple[GenerationSettings, tuple[str, ...]]:
        until = kwargs.pop("until", None) or []
        until = (until,) if isinstance(until, str) else tuple(until)
        eos = self.subject.tokenizer.decode([self.subject.tokenizer.eos_token_id])
        sample = bool(kwargs.get("do_sample", False))
        temperature = float(kwargs.get("temperature", 0.0)) if sample else 0.0
        # lm-eval asks for 256 new tokens by default; on a small window (the testbed's 128)
        # that would leave no room for the prompt, so at most half the window is generated.
        wanted = int(kwargs.get("max_gen_toks", 256))
        setting = GenerationSettings(
            max_new_tokens=max(1, min(wanted, self.subject.max_length // 2)),
            temperature=temperature,
            top_p=float(kwargs.get("top_p", 1.0)),
            seed=self.seed,
            batch_size=self.batch_size,
        )
        return setting, (*until, eos)
