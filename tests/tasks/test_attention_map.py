"""Attention maps: window placement, exact CT geometry of the NIfTI overlay, PNGs, and refusal without SA."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dagman.models.network import DagmanNetwork
from dagman.models.weights import export_encoder
from dagman.tasks import attention_map_cli
from dagman.tasks.attention_map import (
    attention_volume,
    prepare_ct,
    sliding_starts,
    to_reference_grid,
)
from dagman.tasks.embeddings import load_pretrained_encoder

TINY = dict(embed_dim=12, depths=(2, 2, 2, 2), num_heads=(3, 3, 3, 3))


def _export_tiny(folder, sa_stage=3):
    torch.manual_seed(0)
    net = DagmanNetwork(
        "swin",
        img_size=32,
        sa_stage=sa_stage,
        out_dim=16,
        head_hidden_dim=16,
        head_bottleneck_dim=8,
        backbone_kwargs=TINY,
    )
    export_encoder(net, folder / "encoder.pt")
    return folder


def _oblique_ct(path):
    """A small CT with anisotropic spacing, an odd origin and a rotated, flipped direction."""
    rng = np.random.default_rng(0)
    hu = rng.normal(-300, 300, size=(14, 30, 26)).astype(np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((2.2, 1.7, 3.1))
    image.SetOrigin((-31.5, 12.25, -207.0))
    c, s = math.cos(0.4), math.sin(0.4)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))  # rotation about z, z axis flipped
    sitk.WriteImage(image, str(path))
    return path


def test_sliding_starts_cover_the_axis():
    """Windows start at 0, end at the axis end, step at most window*(1-overlap); short axes get one centred window."""
    assert sliding_starts(72, 32, 0.5) == [0, 13, 27, 40]
    assert sliding_starts(64, 32, 0.0) == [0, 32]
    assert sliding_starts(32, 32, 0.5) == [0]
    assert sliding_starts(20, 32, 0.5) == [-6]
    with pytest.raises(ValueError, match="overlap"):
        sliding_starts(40, 32, 1.0)


def test_reference_grid_copies_the_ct_geometry_exactly(tmp_path):
    """An image resampled onto the CT grid has the CT's size, spacing, origin and (non-identity) direction."""
    ct = sitk.ReadImage(str(_oblique_ct(tmp_path / "ct.nii.gz")))
    work, _ = prepare_ct(ct, spacing=2.0)
    assert work.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    on_ct = to_reference_grid(sitk.Cast(work, sitk.sitkFloat32), ct)
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(on_ct, getter)() == getattr(ct, getter)()


def test_attention_is_relative_to_uniform_and_covers_the_volume(tmp_path):
    """Sliding windows cover every voxel; a window's SATT times its token count averages to 1."""
    encoder = load_pretrained_encoder(_export_tiny(tmp_path / "dagman"))
    volume = np.random.default_rng(0).random((20, 40, 36)).astype(np.float32)
    work = sitk.GetImageFromArray(volume)
    result = attention_volume(encoder, volume, work, overlap=0.0)
    assert result.covered.all() and result.values.shape == volume.shape
    assert result.values.min() >= 0 and result.values.mean() == pytest.approx(1.0, abs=0.05)
    assert result.image.GetSize() == work.GetSize()


def test_attention_map_cli_writes_aligned_nifti_and_pngs(tmp_path):
    """`dagman attention-map`: the NIfTI overlay has exactly the CT's geometry; three PNG views are written."""
    ct_path = _oblique_ct(tmp_path / "ct.nii.gz")
    parser = argparse.ArgumentParser()
    attention_map_cli.add_arguments(parser)
    out = tmp_path / "maps"
    args = parser.parse_args(
        [
            "--encoder",
            str(_export_tiny(tmp_path / "dagman")),
            "--image",
            str(ct_path),
            "--out",
            str(out),
            "--overlap",
            "0",
        ]
    )
    assert attention_map_cli.run(args) == 0
    ct, overlay = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(out / "attention.nii.gz"))
    assert overlay.GetSize() == ct.GetSize()
    assert overlay.GetSpacing() == ct.GetSpacing()
    assert overlay.GetOrigin() == ct.GetOrigin()
    assert overlay.GetDirection() == ct.GetDirection()
    assert overlay.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayFromImage(overlay)
    assert values.max() > 0 and np.isfinite(values).all()
    for view in ("axial", "coronal", "sagittal"):
        png = out / f"attention_{view}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_map_refuses_an_encoder_without_attention(tmp_path):
    """A Swin encoder without SA has no attention map: a plain ValueError, not a crash later."""
    encoder = load_pretrained_encoder(_export_tiny(tmp_path / "smit", sa_stage=None), input_size=32)
    volume = np.zeros((32, 32, 32), np.float32)
    with pytest.raises(ValueError, match="no semantic attention"):
        attention_volume(encoder, volume, sitk.GetImageFromArray(volume))
