"""Find the parts of an HF encoder that freezing and layer-wise lr decay act on, across architectures."""

from __future__ import annotations

from torch import nn

_LAYER_PATHS = ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "model.layers", "h")
_EMBEDDING_PATHS = ("embeddings", "embed_tokens", "wte")


def _get_path(module: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def transformer_layers(backbone: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks, bottom first (BERT, RoBERTa, DeBERTa, MPNet, DistilBERT, decoders)."""
    for path in _LAYER_PATHS:
        layers = _get_path(backbone, path)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(
        f"cannot find the transformer layers of {type(backbone).__name__} (looked for {', '.join(_LAYER_PATHS)})"
    )


def embeddings(backbone: nn.Module) -> nn.Module:
    """The embedding block (token, position and type embeddings with their norm where the model has one)."""
    for path in _EMBEDDING_PATHS:
        module = _get_path(backbone, path)
        if isinstance(module, nn.Module):
            return module
    return backbone.get_input_embeddings()


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for param in module.parameters():
        param.requires_grad_(trainable)
