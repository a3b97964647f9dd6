"""Contrastive steering vectors: ActAdd, CAA (mean difference) and PCA of paired differences.

- ActAdd (Turner et al. 2023): one prompt pair, e.g. (" Love", " Hate"), padded to equal length
  with space tokens; the steering "vector" is the (k, d_model) difference of their activations at
  layer L, added to the first k positions of the user prompt with coefficient = strength.
- CAA / mean difference (Rimsky et al. 2024): the mean over the target's contrast pairs of
  act(toward) - act(away) at the answer position (the last token) or averaged over tokens; added
  at the configured positions (all, prompt, generated, first:K) times the strength.
- PCA (repeng-style): the first principal component of the paired differences, sign-aligned so
  that toward-examples project above their away-examples for most pairs; by default rescaled to
  the norm of the mean difference so its strengths read like CAA's.

Layers: one (negative counts from the end), several (the vector of each layer is added at that
layer), "middle" (n_layers // 2), "early" (n_layers // 8: where Turner et al. added ActAdd's
vectors, layer 6 of GPT-2-XL's 48; ActAdd's default) or "sweep": each candidate layer's vector is fit on 3/4 of the
pairs and scored by its causal effect on the rest (how much adding it at strength 1 raises
log p(toward text) - log p(away text), per token); the best layer is refit on all pairs and the
scores are kept in the state's meta. The runner chooses the *strength* on `select`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch

from bench.architectures import Site, hook_name
from bench.errors import UserError
from bench.method import Method
from bench.positions import validate_position_spec
from bench.state import State, content_key
from bench.steering import attached
from bench.subject import Subject
from bench.target import SteeringTarget
from bench.tensors import padded
from methods.activations import (
    AddVector,
    PositionMask,
    collect,
    first_prompt_mask,
    forward_capture,
    spec_mask,
    text_logprobs,
)

Pair = tuple[str, str]
LayerSpec = int | tuple[int, ...] | Literal["middle", "early", "sweep"]
HELD_OUT_EVERY = 4  # the layer sweep scores on every 4th pair, fits on the rest
MAX_HELD_OUT = 64  # pairs scored per candidate layer


@dataclass(frozen=True)
class CAAParams:
    layer: LayerSpec = "middle"
    sweep_layers: tuple[int, ...] = ()  # candidates for layer = "sweep"; () = 1 .. n_layers-2
    site: Site = "resid_post"
    positions: str = "all"  # all | prompt | generated | first:K (where the vector is added)
    token: Literal["last", "mean"] = "last"  # answer position, or the mean over tokens
    normalize: Literal["none", "unit", "mean_diff"] = "none"
    max_pairs: int = 0  # use at most this many contrast pairs (0 = all)
    batch_size: int = 16  # texts per forward while fitting

    def __post_init__(self) -> None:
        validate_position_spec(self.positions)
        if self.max_pairs < 0 or self.batch_size < 1:
            raise ValueError("max_pairs must be >= 0 and batch_size >= 1")


@dataclass(frozen=True)
class PCAParams(CAAParams):
    normalize: Literal["none", "unit", "mean_diff"] = "mean_diff"
    center: bool = False  # centre the differences before PCA (sklearn/repeng "pca_diff" does)


@dataclass(frozen=True)
class ActAddParams:
    # A vector added at the front positions only reaches later tokens through attention, so it
    # must go in early, before the layers that read those positions.
    layer: LayerSpec = "early"
    sweep_layers: tuple[int, ...] = ()
    site: Site = "resid_pre"  # Turner et al. add to the residual stream entering block L
    pad: Literal["space", "pad"] = "space"  # token that pads the shorter prompt of the pair
    # Start the pair with a BOS token when the tokenizer adds none (GPT-2), as TransformerLens
    # does in Turner et al.: row 0 (BOS - BOS = 0) then lands on the prompt's first token, the
    # attention sink, and the concept rows on the tokens after it, where they are attended to.
    prepend_bos: bool = True


class VectorMethod(Method):
    """Shared fitting (layers, sweep, state) and steering of the vector methods."""

    STEER_ONLY: tuple[str, ...] = ("positions",)  # params that do not change the fitted state
    cost_budget = 1.05  # a vector hook: steered / unsteered generation time (steerbench bench)

    # ------------------------------------------------------------------ per method
    @abstractmethod
    def source(self, target: SteeringTarget) -> tuple[Pair, ...]:
        """The pairs the vector is fit on."""

    @abstractmethod
    def fit_layers(
        self, subject: Subject, pairs: tuple[Pair, ...], points: list[str]
    ) -> list[torch.Tensor]:
        """One vector (d_model,) or matrix (k, d_model) per hook point."""

    def sweep_split(self, target: SteeringTarget) -> tuple[tuple[Pair, ...], tuple[Pair, ...]]:
        """(pairs to fit on, pairs to score layers on) for layer = "sweep"."""
        pairs = self.source(target)
        if len(pairs) < HELD_OUT_EVERY:
            return pairs, pairs  # too few to hold any out: scored in-sample (meta says so)
        held = pairs[::HELD_OUT_EVERY]
        return tuple(p for i, p in enumerate(pairs) if i % HELD_OUT_EVERY), held

    def for_scoring(self) -> VectorMethod:
        """The method that fits the vectors the layer sweep scores (at their natural scale)."""
        return self

    def mask(self, state: State, *, scoring: bool = False) -> PositionMask | None:
        # While scoring layers every position counts (a plain forward has no generated part).
        return spec_mask("all" if scoring else self.params.positions)

    def fit_meta(self, target: SteeringTarget) -> dict:
        pairs = self.source(target)
        return {"n_pairs": len(pairs), "pairs_hash": content_key(pairs)}

    # ------------------------------------------------------------------ Method
    def fit_key_parts(self) -> dict:
        params = {k: v for k, v in asdict(self.params).items() if k not in self.STEER_ONLY}
        return {"method": self.name, "version": self.version, "params": params}

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        site = self.params.site
        sweep = None
        if self.params.layer == "sweep":
            layer, sweep = self._sweep(subject, target)
            layers = [layer]
        else:
            layers = self._layers(subject)
        vectors = self.fit_layers(
            subject, self.source(target), [hook_name(i, site) for i in layers]
        )
        tensors = {f"vector.{i}": v.float().cpu().contiguous() for i, v in zip(layers, vectors)}
        meta = {
            "method": self.name,
            "version": self.version,
            "layers": layers,
            "site": site,
            "model": subject.fingerprint(),
            "model_name": subject.name,
            "target": target.name,
            "fit_on": self.fit_meta(target),
            "params": json.loads(json.dumps(asdict(self.params))),  # as State.load gives it
            "norms": {str(i): float(v.float().norm()) for i, v in zip(layers, vectors)},
            "sweep": sweep,
        }
        return State(tensors, meta)

    def steered(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        if state.meta.get("model") not in (None, subject.fingerprint()):
            raise UserError(
                f"{self.name}: the state was fit on model {state.meta.get('model_name')} "
                f"({state.meta['model']}), not on {subject.name} ({subject.fingerprint()})"
            )
        return attached(subject, hooks=self.hooks(state, strength))

    def hooks(self, state: State, strength: float, *, scoring: bool = False) -> list:
        mask = self.mask(state, scoring=scoring)  # one mask shared by all layers' hooks
        site = state.meta["site"]
        return [
            (hook_name(i, site), AddVector(strength * state.tensors[f"vector.{i}"], mask))
            for i in state.meta["layers"]
        ]

    # ------------------------------------------------------------------ layers
    def _layer(self, subject: Subject, layer: int) -> int:
        return subject.hookpoint(hook_name(layer, self.params.site)).layer

    def _layers(self, subject: Subject) -> list[int]:
        spec = self.params.layer
        if spec == "middle":
            return [subject.n_layers // 2]
        if spec == "early":
            return [subject.n_layers // 8]
        chosen = spec if isinstance(spec, tuple) else (spec,)
        if not chosen:
            raise UserError(f"{self.name}: 'layer' is an empty list")
        return sorted({self._layer(subject, i) for i in chosen})

    def _candidates(self, subject: Subject) -> list[int]:
        if self.params.sweep_layers:
            return sorted({self._layer(subject, i) for i in self.params.sweep_layers})
        n = subject.n_layers
        return list(range(1, n - 1)) if n >= 3 else list(range(n))

    def _sweep(self, subject: Subject, target: SteeringTarget) -> tuple[int, dict]:
        """Fit every candidate layer on the fit part, score it on held-out pairs, pick the best."""
        fit_pairs, held = self.sweep_split(target)
        held = held[:MAX_HELD_OUT]
        candidates = self._candidates(subject)
        site = self.params.site
        # Scored at strength 1 with each layer's own scale (a unit vector would favour the
        # early layers, whose activations are smallest).
        points = [hook_name(i, site) for i in candidates]
        vectors = self.for_scoring().fit_layers(subject, fit_pairs, points)
        texts = [t for t, _ in held] + [a for _, a in held]

        def margin() -> float:  # mean over pairs of [lp(toward) - lp(away)], per token
            lp = text_logprobs(subject, texts)
            return float((lp[: len(held)] - lp[len(held) :]).mean())

        base = margin()
        scores = {}
        for layer, vector in zip(candidates, vectors):
            probe = State({f"vector.{layer}": vector}, {"layers": [layer], "site": site})
            with attached(subject, hooks=self.hooks(probe, 1.0, scoring=True)):
                shift = margin() - base
            scores[str(layer)] = shift if shift == shift else float("-inf")  # NaN ranks last
        best = max(candidates, key=lambda i: scores[str(i)])
        info = {
            "candidates": candidates,
            "scores": scores,
            "chosen": best,
            "proxy": "held-out shift of mean log p(toward) - log p(away) per token at strength 1",
            "held_out_pairs": len(held),
            "in_sample": set(held) <= set(fit_pairs),
        }
        return best, info


class CAA(VectorMethod):
    name = "caa"
    summary = "contrastive activation addition: mean difference over contrast pairs"
    Params = CAAParams
    # Fine steps below 1 up to 4: how far a mean difference can be scaled before fluency
    # collapses differs by behaviour (some past 1, others need 1-4; README), and the sweep
    # must cover both.
    default_strengths = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    version = "1"

    def applies_to(self, target: SteeringTarget) -> bool:
        return bool(target.contrast_pairs)

    def source(self, target: SteeringTarget) -> tuple[Pair, ...]:
        pairs = tuple(target.contrast_pairs)
        if not pairs:
            raise UserError(f"{self.name}: target '{target.name}' has no contrast_pairs")
        return pairs[: self.params.max_pairs] if self.params.max_pairs else pairs

    def for_scoring(self) -> VectorMethod:
        return type(self)(replace(self.params, normalize="mean_diff"))

    def differences(
        self, subject: Subject, pairs: tuple[Pair, ...], points: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations of toward and away texts, each (len(points), n_pairs, d_model)."""
        texts = [t for t, _ in pairs] + [a for _, a in pairs]
        acts = collect(
            subject, texts, points, reduce=self.params.token, batch_size=self.params.batch_size
        )
        return acts[:, : len(pairs)], acts[:, len(pairs) :]

    def direction(self, toward: torch.Tensor, away: torch.Tensor) -> torch.Tensor:
        """One layer's raw vector from its (n_pairs, d_model) activations."""
        return (toward - away).mean(0)

    def fit_layers(
        self, subject: Subject, pairs: tuple[Pair, ...], points: list[str]
    ) -> list[torch.Tensor]:
        toward, away = self.differences(subject, pairs, points)
        out = []
        for t, a in zip(toward, away):
            vector = self.direction(t, a)
            target_norm = {
                "none": vector.norm(),
                "unit": torch.ones(()),
                "mean_diff": (t - a).mean(0).norm(),
            }[self.params.normalize]
            out.append(vector / vector.norm().clamp(min=1e-12) * target_norm)
        return out


class PCA(CAA):
    name = "pca"
    summary = "first principal component of paired differences (repeng-style), sign-aligned"
    Params = PCAParams

    def direction(self, toward: torch.Tensor, away: torch.Tensor) -> torch.Tensor:
        diffs = toward - away  # (n_pairs, d_model)
        data = diffs - diffs.mean(0) if self.params.center else diffs
        if not bool(data.abs().sum() > 0):
            return torch.zeros_like(diffs[0])
        component = torch.linalg.svd(data.double(), full_matrices=False).Vh[0].float()
        # Sign: toward should project above away for most pairs (repeng's rule); ties go to
        # the sign of the mean projected difference. Always on the raw, uncentred differences.
        projected = diffs @ component  # (n_pairs,)
        votes = (projected > 0).float().mean() - (projected < 0).float().mean()
        if votes < 0 or (votes == 0 and projected.mean() < 0):
            component = -component
        return component  # unit norm: "none" keeps it so (repeng), "mean_diff" rescales


class ActAdd(VectorMethod):
    name = "actadd"
    summary = "activation addition: one prompt pair's activation difference at the front"
    Params = ActAddParams
    default_strengths = (0.0, 1.0, 2.0, 4.0, 8.0)  # Turner et al. use coefficients ~1-15
    version = "3"  # 2: the pair starts with a BOS; 3: default layer "early"
    STEER_ONLY = ()

    def applies_to(self, target: SteeringTarget) -> bool:
        needs_pairs = self.params.layer == "sweep"
        return target.concept_pair is not None and (bool(target.contrast_pairs) or not needs_pairs)

    def source(self, target: SteeringTarget) -> tuple[Pair, ...]:
        if target.concept_pair is None:
            raise UserError(f"{self.name}: target '{target.name}' has no concept_pair")
        return (tuple(target.concept_pair),)

    def sweep_split(self, target: SteeringTarget) -> tuple[tuple[Pair, ...], tuple[Pair, ...]]:
        if not target.contrast_pairs:
            raise UserError(
                f"{self.name}: layer = 'sweep' scores layers on contrast pairs, and target "
                f"'{target.name}' has none; give a layer"
            )
        return self.source(target), tuple(target.contrast_pairs)

    def mask(self, state: State, *, scoring: bool = False) -> PositionMask:
        window = next(iter(state.tensors.values())).shape[0]  # k: the padded pair's length
        return first_prompt_mask(window)

    def fit_meta(self, target: SteeringTarget) -> dict:
        return {"concept_pair": list(self.source(target)[0])}

    def padded_pair(self, subject: Subject, pair: Pair) -> torch.Tensor:
        """(2, k) token ids of the pair, the shorter padded at the end (Turner et al.)."""
        rows = [subject.encode(text) for text in pair]
        if self.params.prepend_bos and not subject.encode(""):
            bos = subject.tokenizer.bos_token_id
            rows = [[bos if bos is not None else subject.tokenizer.eos_token_id, *r] for r in rows]
        space = subject.tokenizer(" ", add_special_tokens=False)["input_ids"]
        pad = (
            space[0]
            if self.params.pad == "space" and len(space) == 1
            else subject.tokenizer.pad_token_id
        )
        return padded(rows, pad, side="right", device=subject.device)[0]

    def fit_layers(
        self, subject: Subject, pairs: tuple[Pair, ...], points: list[str]
    ) -> list[torch.Tensor]:
        ids = self.padded_pair(subject, pairs[0])
        acts = forward_capture(subject, ids, torch.ones_like(ids), points)
        return [(acts[p][0] - acts[p][1]).float() for p in points]  # (k, d_model) each

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        state = super().fit(subject, target)
        ids = self.padded_pair(subject, self.source(target)[0])
        tokens = [subject.tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]
        return State(state.tensors, {**state.meta, "window": ids.shape[1], "tokens": tokens})
