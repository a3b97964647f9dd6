"""Export a fitted steering vector to the `.pt` file lm-eval's `steered` model reads.

    lm_eval --model steered --model_args pretrained=MODEL,steer_path=vector.pt ...

lm-eval (`lm_eval/models/hf_steered.py`) reads a dict
    {hookpoint: {"steering_vector": Tensor (d_model,), "steering_coefficient": float,
                 "action": "add", "bias": None, "head_index": None}}
where hookpoint is a module name inside `model.base_model` (e.g. "h.6" for GPT-2, "layers.6"
for Llama) whose *output* gets `coefficient * vector` added at every position. So:
- resid_post at layer L -> the block's output ("h.L"); resid_pre at L -> block L-1's output;
- attn_out / mlp_out -> the attention / MLP module's output.
lm-eval adds at all positions: the matching steerbench setting is `positions = "all"`. ActAdd's
position-indexed matrices have no lm-eval equivalent and are refused.

The file holds only tensors, floats, strings and None, so it also loads with
`torch.load(weights_only=True)`.

Command line (reads the model's config only, no weights):
    python -m methods.lm_eval_export STATE.safetensors OUT.pt --model MODEL [--strength 4]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from bench.architectures import hook_name, resolve
from bench.errors import UserError
from bench.state import State
from bench.subject import Subject


def lm_eval_hookpoint(point: str, *, model_type: str, n_layers: int, base_prefix: str) -> str:
    """lm-eval's module name (relative to `model.base_model`) for our hook point name."""
    hook = resolve(point, model_type, n_layers)
    if hook.site == "resid_pre":
        if hook.layer == 0:
            raise UserError(
                f"{point}: the input of the first block has no block output to hook in lm-eval; "
                "fit at layer >= 1 or at resid_post"
            )
        hook = resolve(hook_name(hook.layer - 1, "resid_post"), model_type, n_layers)
    prefix = f"{base_prefix}."
    if not hook.module_path.startswith(prefix):
        raise UserError(f"{point}: module {hook.module_path} is outside the base model")
    return hook.module_path[len(prefix) :]


def steer_config(
    state: State,
    *,
    model_type: str,
    n_layers: int,
    hidden_size: int,
    base_prefix: str,
    strength: float = 1.0,
) -> dict[str, dict]:
    """The dict lm-eval's `SteeredModel` loads from `steer_path`. A vector that does not fit
    the model's hidden size is refused here: lm-eval would only fail inside its forward."""
    config: dict[str, dict] = {}
    site = state.meta.get("site")
    if site is None or "layers" not in state.meta:
        raise UserError("not a steering-vector state (no 'layers'/'site' in its meta)")
    for layer in state.meta["layers"]:
        vector = state.tensors[f"vector.{layer}"]
        if vector.dim() != 1:
            raise UserError(
                f"{state.meta.get('method', 'this method')}: a position-indexed "
                f"{tuple(vector.shape)} vector (ActAdd) has no lm-eval equivalent; "
                "lm-eval adds one vector at every position"
            )
        if vector.shape[0] != hidden_size:
            raise UserError(
                f"{state.meta.get('method', 'this state')}: the vector at layer {layer} has "
                f"{vector.shape[0]} values but the model's hidden size is {hidden_size} "
                "(was it fit on another model?)"
            )
        point = lm_eval_hookpoint(
            hook_name(layer, site),
            model_type=model_type,
            n_layers=n_layers,
            base_prefix=base_prefix,
        )
        config[point] = {
            "steering_vector": vector.detach().float().cpu().contiguous(),
            "steering_coefficient": float(strength),
            "action": "add",
            "bias": None,
            "head_index": None,
        }
    return config


def export(
    subject: Subject, state: State, path: str | os.PathLike, *, strength: float = 1.0
) -> Path:
    """Write `state` (fit on `subject`) as an lm-eval steer file at `path`."""
    model = subject.model
    fit_on = state.meta.get("model")  # the fingerprint of the model the vector was fit on
    if fit_on is not None and fit_on != subject.fingerprint():
        raise UserError(
            f"the state was fit on model {state.meta.get('model_name', '?')} ({fit_on}), "
            f"not on {subject.name} ({subject.fingerprint()})"
        )
    config = steer_config(
        state,
        model_type=subject.model_type,
        n_layers=subject.n_layers,
        hidden_size=model.config.hidden_size,
        base_prefix=model.base_model_prefix,
        strength=strength,
    )
    names = dict(model.base_model.named_modules())
    missing = [p for p in config if p not in names]
    if missing:
        raise UserError(f"lm-eval hookpoint(s) {missing} not found in {subject.name}")
    return _write(config, path)


def _write(config: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix not in (".pt", ".pth"):
        raise UserError(f"{path}: lm-eval reads steer files ending in .pt or .pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(config, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m methods.lm_eval_export", description=__doc__)
    parser.add_argument("state", help="a fitted vector state (.safetensors)")
    parser.add_argument("out", help="the .pt file to write")
    parser.add_argument("--model", required=True, help="hub id or directory the state was fit on")
    parser.add_argument("--strength", type=float, default=1.0, help="steering coefficient")
    args = parser.parse_args(argv)
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        if not Path(args.state).is_file():
            raise UserError(f"state file not found: {args.state}")
        try:
            model_config = AutoConfig.from_pretrained(args.model)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read the config of '{args.model}': {error}") from None
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(model_config)]
        config = steer_config(
            State.load(args.state),
            model_type=model_config.model_type,
            n_layers=model_config.num_hidden_layers,
            hidden_size=model_config.hidden_size,
            base_prefix=model_class.base_model_prefix,
            strength=args.strength,
        )
        print(_write(config, args.out))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
