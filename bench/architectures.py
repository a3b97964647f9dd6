"""Architecture-neutral hook point names resolved to module paths, per model family.

A hook point is named `layers.{i}.{site}` with site one of:
- `resid_pre`  : the residual stream entering block i   (batch, seq, d_model)
- `resid_post` : the residual stream leaving block i    (batch, seq, d_model)
- `attn_out`   : the attention sub-layer's output before it joins the residual stream
- `mlp_out`    : the MLP sub-layer's output before it joins the residual stream

The table is plain data: where the list of blocks lives and, inside a block, which child module
produces the attention and MLP outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from bench.errors import UserError

Site = Literal["resid_pre", "resid_post", "attn_out", "mlp_out"]
SITES: tuple[str, ...] = get_args(Site)


@dataclass(frozen=True)
class Layout:
    blocks: str  # dotted path from the *ForCausalLM model to its ModuleList of blocks
    attn: str  # dotted path inside a block to the attention module
    mlp: str  # dotted path inside a block to the module whose output is the MLP output


LAYOUTS: dict[str, Layout] = {
    "gpt2": Layout(blocks="transformer.h", attn="attn", mlp="mlp"),
    "gpt_neox": Layout(blocks="gpt_neox.layers", attn="attention", mlp="mlp"),
    "llama": Layout(blocks="model.layers", attn="self_attn", mlp="mlp"),
    "mistral": Layout(blocks="model.layers", attn="self_attn", mlp="mlp"),
    "qwen2": Layout(blocks="model.layers", attn="self_attn", mlp="mlp"),
    "qwen3": Layout(blocks="model.layers", attn="self_attn", mlp="mlp"),
    "gemma": Layout(blocks="model.layers", attn="self_attn", mlp="mlp"),
    "gemma2": Layout(blocks="model.layers", attn="self_attn", mlp="mlp"),
    # OPT's MLP is inline in the block (fc1 -> act -> fc2); fc2's output is the MLP output.
    "opt": Layout(blocks="model.decoder.layers", attn="self_attn", mlp="fc2"),
}


@dataclass(frozen=True)
class HookPoint:
    """A resolved hook point: which module, and whether to hook its input or its output."""

    name: str
    layer: int
    site: str
    module_path: str
    on_input: bool  # resid_pre hooks the block's input (a forward pre-hook)


def hook_name(layer: int, site: str) -> str:
    """The hook point name of `site` in block `layer` (negative counts from the end)."""
    return f"layers.{layer}.{site}"


def layout_for(model_type: str) -> Layout:
    try:
        return LAYOUTS[model_type]
    except KeyError:
        known = ", ".join(sorted(LAYOUTS))
        raise UserError(
            f"no hook point table for architecture '{model_type}'; supported: {known}"
        ) from None


def resolve(name: str, model_type: str, n_layers: int) -> HookPoint:
    """Resolve 'layers.{i}.{site}' (negative i counts from the end) for a model family."""
    layout = layout_for(model_type)
    valid = f"valid names: layers.{{0..{n_layers - 1}}}.{{{','.join(SITES)}}}"
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "layers" or parts[2] not in SITES:
        raise UserError(f"unknown hook point '{name}'; {valid}")
    try:
        layer = int(parts[1])
    except ValueError:
        raise UserError(f"unknown hook point '{name}'; {valid}") from None
    if layer < 0:
        layer += n_layers
    if not 0 <= layer < n_layers:
        raise UserError(f"hook point '{name}': layer out of range for {n_layers} layers; {valid}")
    site = parts[2]
    block = f"{layout.blocks}.{layer}"
    path = {"resid_pre": block, "resid_post": block}.get(site)
    if path is None:
        path = f"{block}.{layout.attn if site == 'attn_out' else layout.mlp}"
    return HookPoint(hook_name(layer, site), layer, site, path, on_input=site == "resid_pre")
