"""Models layer of dagman: Swin and ViT backbones, semantic attention, heads and the DAGMaN network.

Import the public API from here, for example ``from dagman.models import DagmanNetwork, export_encoder``.
"""

from __future__ import annotations

from dagman.models.heads import ProjectionHead, ReconstructionHead, voxel_shuffle, voxel_unshuffle
from dagman.models.network import BACKBONES, DagmanNetwork, NetworkOutput, build_backbone
from dagman.models.semantic_attention import SAOutput, SemanticAttention, satt_from_cls_attention
from dagman.models.swin import SwinBackbone, SwinFeatures, expand_grid_mask
from dagman.models.vit import ViTBackbone, ViTFeatures
from dagman.models.weights import (
    EncoderLoadReport,
    LoadedEncoder,
    as_input_size,
    export_encoder,
    export_files,
    load_encoder,
    load_encoder_into_swinunetr,
    load_semantic_attention,
    map_encoder_keys,
    read_export_config,
    swinunetr_kwargs,
)

__all__ = [
    "BACKBONES",
    "DagmanNetwork",
    "EncoderLoadReport",
    "LoadedEncoder",
    "NetworkOutput",
    "ProjectionHead",
    "ReconstructionHead",
    "SAOutput",
    "SemanticAttention",
    "SwinBackbone",
    "SwinFeatures",
    "ViTBackbone",
    "ViTFeatures",
    "as_input_size",
    "build_backbone",
    "expand_grid_mask",
    "export_encoder",
    "export_files",
    "load_encoder",
    "load_encoder_into_swinunetr",
    "load_semantic_attention",
    "map_encoder_keys",
    "read_export_config",
    "satt_from_cls_attention",
    "swinunetr_kwargs",
    "voxel_shuffle",
    "voxel_unshuffle",
]
