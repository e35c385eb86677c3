"""Patch dropout for the noisy teacher (DESIGN 3.4; preprint III-D).

The teacher sees each view with a random fraction PDR of its patch tokens zeroed. The noise is applied
explicitly by these functions and never depends on a module's ``train()``/``eval()`` state: timm's
``PatchDropout`` silently does nothing in eval mode, and the teacher usually runs in eval mode.
Tokens are zeroed in place of being removed, so the teacher keeps its full token grid (Swin windows
need it) and the SATT it returns still has one value per cell.
"""

from __future__ import annotations

import torch

from dagman.ssl.masking import count_for_ratio

__all__ = ["apply_patch_dropout", "patch_dropout_mask"]


def patch_dropout_mask(
    batch_size: int,
    n_tokens: int,
    pdr: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Choose the tokens to drop: exactly ``round(pdr * N)`` uniformly random tokens per image.

    Args:
        batch_size: number of images B.
        n_tokens: tokens per image N (patch tokens only, no [CLS]).
        pdr: patch drop ratio in [0, 1] (paper: 0.7).
        generator: source of randomness; a CPU generator may serve a GPU batch.
        device: device of the returned mask.

    Returns:
        Bool (B, N), True = token is zeroed.
    """
    k = count_for_ratio(pdr, n_tokens)
    dev = torch.device(device)
    mask = torch.zeros(batch_size, n_tokens, dtype=torch.bool, device=dev)
    if k > 0:
        gen_device = generator.device if generator is not None else dev
        keys = torch.rand(batch_size, n_tokens, generator=generator, device=gen_device).to(dev)
        mask.scatter_(1, keys.topk(k, dim=1).indices, True)
    return mask


def apply_patch_dropout(tokens: torch.Tensor, drop_mask: torch.Tensor) -> torch.Tensor:
    """Zero the dropped tokens (out of place, so autograd and the caller's tensor are safe).

    Args:
        tokens: (B, N, C) token sequences (ViT) or (B, C, d, h, w) feature maps (Swin patch embedding).
        drop_mask: bool (B, N), or (B, d, h, w) for feature maps; True = zero the token.

    Returns:
        Tensor like ``tokens`` with the dropped tokens set to 0.
    """
    if drop_mask.dtype != torch.bool:
        raise ValueError(f"drop_mask must be bool, got {drop_mask.dtype}")
    if tokens.ndim == 3:
        if drop_mask.shape != tokens.shape[:2]:
            raise ValueError(
                f"drop_mask of shape {tuple(drop_mask.shape)} does not match tokens (B, N, C) "
                f"{tuple(tokens.shape)}"
            )
        return tokens.masked_fill(drop_mask.unsqueeze(-1), 0)
    if tokens.ndim == 5:
        b, _, d, h, w = tokens.shape
        if drop_mask.numel() != b * d * h * w or drop_mask.shape[0] != b:
            raise ValueError(
                f"drop_mask of shape {tuple(drop_mask.shape)} does not match feature map (B, C, d, h, w) "
                f"{tuple(tokens.shape)}"
            )
        return tokens.masked_fill(drop_mask.reshape(b, 1, d, h, w), 0)
    raise ValueError(f"tokens must be (B, N, C) or (B, C, d, h, w), got shape {tuple(tokens.shape)}")
