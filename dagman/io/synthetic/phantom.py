"""Synthetic chest CT phantoms in Hounsfield units, and nodules painted into them.

The phantom is built in millimetres around the body centre, so it looks the same at any voxel spacing and
field of view: an elliptical body with a fat layer, two lungs with branching vessels and bronchi, trachea,
heart, aorta, vertebrae with discs and spinal canal, ribs, sternum, liver and spleen in the lower slices,
partial-volume blur and Gaussian noise. Everything is vectorised numpy (masks on broadcast grids; tubes are
drawn inside each segment's bounding box), so a 96 x 128 x 128 volume takes a fraction of a second.

Axes follow DICOM LPS with arrays in (z, y, x) order: x grows to the patient's left, y to posterior, z to
superior (slice 0 is the most inferior, in the upper abdomen).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["HU", "chest_phantom", "add_nodule"]

# Reference intensities (HU) of the tissues painted below.
HU: dict[str, float] = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "soft_tissue": 40.0,
    "blood": 40.0,
    "vessel": 40.0,
    "liver": 60.0,
    "spleen": 50.0,
    "bone": 700.0,
    "cancellous": 250.0,
    "disc": 80.0,
    "csf": 10.0,
    "airway_wall": -50.0,
    "nodule": 30.0,
}

_MIN_HU, _MAX_HU = -1024, 3071  # what a 12-bit CT scanner reconstructs


def _tubes(
    shape: Sequence[int],
    spacing_zyx: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    radii: np.ndarray,
) -> np.ndarray:
    """Boolean mask of capsules (segment +- radius), all in (z, y, x) mm; one bounding-box pass per segment."""
    mask = np.zeros(tuple(shape), dtype=bool)
    upper = np.asarray(shape) - 1
    for a, b, r in zip(starts, ends, radii, strict=True):
        lo = np.clip(np.floor((np.minimum(a, b) - r) / spacing_zyx).astype(int), 0, upper)
        hi = np.clip(np.ceil((np.maximum(a, b) + r) / spacing_zyx).astype(int), 0, upper)
        if np.any(hi < lo):
            continue
        zz, yy, xx = (np.arange(lo[i], hi[i] + 1) * spacing_zyx[i] for i in range(3))
        p = np.stack(np.broadcast_arrays(zz[:, None, None], yy[None, :, None], xx[None, None, :]), axis=-1)
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
        d2 = np.sum((p - (a + t[..., None] * ab)) ** 2, axis=-1)
        mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] |= d2 <= r * r
    return mask


def _branching_tree(
    root: np.ndarray,
    direction: np.ndarray,
    length: float,
    radius: float,
    depth: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments (starts, ends, radii) of a random bifurcating tree, generation by generation (no recursion)."""
    starts, ends, radii = [], [], []
    front = [(root, direction / np.linalg.norm(direction), length, radius)]
    for _ in range(depth):
        nxt = []
        for start, d, seg_len, r in front:
            end = start + d * seg_len
            starts.append(start)
            ends.append(end)
            radii.append(r)
            for _child in range(2):
                # children bend away from the parent by 25-45 degrees in a random plane
                perp = rng.normal(size=3)
                perp -= (perp @ d) * d
                perp /= np.linalg.norm(perp) + 1e-9
                angle = np.deg2rad(rng.uniform(25, 45))
                child = np.cos(angle) * d + np.sin(angle) * perp
                nxt.append((end, child, seg_len * rng.uniform(0.7, 0.85), r * 0.78))
        front = nxt
    return np.array(starts), np.array(ends), np.array(radii)


def chest_phantom(
    shape: Sequence[int],
    spacing: Sequence[float],
    rng: np.random.Generator,
    *,
    noise_hu: float | None = None,
) -> np.ndarray:
    """A plausible chest CT volume with random per-case anatomy.

    Args:
        shape: (z, y, x) voxels.
        spacing: (x, y, z) mm.
        rng: the source of all randomness (sizes, positions, branching, noise); same state, same volume.
        noise_hu: standard deviation of the Gaussian noise; default drawn from [15, 25] HU.

    Returns:
        (z, y, x) int16 HU, clipped to [-1024, 3071].
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (z, y, x) with positive sizes, got {tuple(shape)}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be positive (x, y, z) mm, got {tuple(spacing)}")
    nz, ny, nx = (int(s) for s in shape)
    sx, sy, sz = (float(s) for s in spacing)
    spacing_zyx = np.array([sz, sy, sx])

    # Body semi-axes (mm): adult chest sizes, shrunk to fit the field of view with a margin of air.
    a = min(rng.uniform(140, 175), 0.46 * nx * sx)
    b = min(rng.uniform(95, 125), 0.44 * ny * sy, 0.8 * a)
    cx = (nx - 1) * sx / 2 + rng.uniform(-0.03, 0.03) * a
    cy = (ny - 1) * sy / 2 + rng.uniform(-0.03, 0.03) * b
    length = max((nz - 1) * sz, 1.0)

    # Normalised coordinates: X, Y in body semi-axes (right -> left, anterior -> posterior), T in [0, 1]
    # from the inferior to the superior end of the scan. 2-D and 1-D grids broadcast to 3-D on use.
    X = ((np.arange(nx) * sx - cx) / a)[None, None, :]
    Y = ((np.arange(ny) * sy - cy) / b)[None, :, None]
    T = (np.arange(nz) * sz / length)[:, None, None]

    vol = np.full((nz, ny, nx), HU["air"], dtype=np.float32)

    # Body, slightly wider at the bottom (abdomen), with a subcutaneous fat layer.
    taper = 1.0 + 0.05 * (0.5 - T)
    body_r2 = (X / taper) ** 2 + (Y / taper) ** 2
    fat_frac = rng.uniform(0.06, 0.12)
    vol[np.broadcast_to(body_r2 <= 1.0, vol.shape)] = HU["fat"]
    inner = body_r2 <= (1.0 - fat_frac) ** 2
    vol[np.broadcast_to(inner, vol.shape)] = HU["soft_tissue"]

    # Lungs: ellipsoids on each side; the right one (low x) starts higher, above the liver dome.
    lung = np.zeros(vol.shape, dtype=bool)
    lung_centres = []
    for side in (-1.0, 1.0):
        lx = side * rng.uniform(0.40, 0.47)
        ly = rng.uniform(-0.08, 0.02)
        rx = rng.uniform(0.28, 0.34)
        ry = rng.uniform(0.55, 0.65)
        t0 = rng.uniform(0.60, 0.66) + (0.04 if side < 0 else 0.0)
        th = rng.uniform(0.42, 0.48)
        lung |= ((X - lx) / rx) ** 2 + ((Y - ly) / ry) ** 2 + ((T - t0) / th) ** 2 <= 1.0
        lung_centres.append((lx, ly, t0, rx, ry, th))
    lung &= np.broadcast_to(inner, vol.shape)
    vol[lung] = HU["lung"]

    # Heart in its epicardial fat: anterior, left of the midline, low in the chest; it displaces lung.
    hx, hy, ht = rng.uniform(0.05, 0.18), rng.uniform(-0.25, -0.10), rng.uniform(0.35, 0.45)
    heart_r2 = (
        ((X - hx) / rng.uniform(0.26, 0.32)) ** 2
        + ((Y - hy) / rng.uniform(0.32, 0.40)) ** 2
        + ((T - ht) / rng.uniform(0.16, 0.20)) ** 2
    )
    pericardial = heart_r2 <= 1.0
    heart = heart_r2 <= rng.uniform(0.75, 0.85)
    vol[pericardial] = HU["fat"]
    vol[heart] = HU["blood"]
    lung &= ~pericardial

    # Descending aorta: a vertical tube left-anterior of the spine.
    aorta_r = rng.uniform(10, 14)
    ax_mm, ay_mm = cx + 0.10 * a, cy + 0.42 * b
    aorta_2d = (
        (np.arange(nx) * sx - ax_mm)[None, :] ** 2 + (np.arange(ny) * sy - ay_mm)[:, None] ** 2
    ) <= aorta_r**2
    vol[np.broadcast_to(aorta_2d[None], vol.shape) & (T > 0.15)] = HU["blood"]

    # Liver (right, below the right lung) and spleen (left posterior), painted over lung bases.
    liver = ((X + rng.uniform(0.20, 0.30)) / rng.uniform(0.55, 0.65)) ** 2 + (
        (Y - rng.uniform(-0.1, 0.05)) / rng.uniform(0.65, 0.75)
    ) ** 2 + ((T - rng.uniform(0.0, 0.08)) / rng.uniform(0.30, 0.36)) ** 2 <= 1.0
    liver = liver & np.broadcast_to(inner, vol.shape)
    vol[liver] = HU["liver"]
    spleen = ((X - 0.55) / 0.2) ** 2 + ((Y - 0.35) / 0.3) ** 2 + (
        (T - rng.uniform(0.05, 0.12)) / 0.15
    ) ** 2 <= 1.0
    spleen = spleen & np.broadcast_to(inner, vol.shape)
    vol[spleen] = HU["spleen"]
    # Stomach (left upper abdomen) with an air-fluid level: air rises anteriorly in a supine patient.
    sy0 = rng.uniform(-0.25, -0.05)
    stomach = ((X - 0.35) / 0.22) ** 2 + ((Y - sy0) / 0.25) ** 2 + (
        (T - rng.uniform(0.02, 0.1)) / 0.14
    ) ** 2 <= 1.0
    stomach = stomach & np.broadcast_to(inner, vol.shape)
    vol[stomach] = HU["csf"]
    vol[stomach & (Y < sy0 - 0.1)] = HU["air"]
    lung &= ~(liver | spleen | stomach)

    # Vessels and bronchi: random trees from each hilum into the lung, kept inside the lung mask.
    vessel_starts, vessel_ends, vessel_radii = [], [], []
    bronchus_starts, bronchus_ends, bronchus_radii = [], [], []
    for lx, ly, t0, _rx, _ry, th in lung_centres:
        side = np.sign(lx)
        hilum = np.array([(t0 - 0.2 * th) * length, cy + ly * b, cx + (lx - side * 0.18) * a])
        for _ in range(4):
            d = np.array([rng.uniform(-1, 1), rng.uniform(-0.6, 0.6), side * rng.uniform(0.3, 1.0)])
            s, e, r = _branching_tree(hilum, d, rng.uniform(22, 30), rng.uniform(4.0, 5.0), 5, rng)
            vessel_starts.append(s)
            vessel_ends.append(e)
            vessel_radii.append(r)
        d = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), side * 1.0])
        s, e, r = _branching_tree(hilum, d, rng.uniform(25, 30), rng.uniform(4.0, 5.0), 3, rng)
        bronchus_starts.append(s)
        bronchus_ends.append(e)
        bronchus_radii.append(r)
    vessels = _tubes(
        vol.shape,
        spacing_zyx,
        np.concatenate(vessel_starts),
        np.concatenate(vessel_ends),
        np.concatenate(vessel_radii),
    )
    vol[vessels & lung] = HU["vessel"]
    b_s, b_e, b_r = (np.concatenate(v) for v in (bronchus_starts, bronchus_ends, bronchus_radii))
    wall = _tubes(vol.shape, spacing_zyx, b_s, b_e, b_r)
    lumen = _tubes(vol.shape, spacing_zyx, b_s, b_e, b_r * 0.65)
    vol[wall & lung] = HU["airway_wall"]
    vol[lumen & lung] = HU["air"]

    # Trachea: midline air tube from the carina to the top of the scan, then two main bronchi.
    carina = np.array([rng.uniform(0.62, 0.70) * length, cy - 0.05 * b, cx])
    trachea_r = rng.uniform(8, 10)
    top = carina + np.array([length, 0.0, 0.0])
    t_s, t_e, t_r = [carina], [top], [trachea_r]
    for lx, ly, t0, _rx, _ry, th in lung_centres:
        side = np.sign(lx)
        t_s.append(carina)
        t_e.append(np.array([(t0 - 0.2 * th) * length, cy + ly * b, cx + (lx - side * 0.18) * a]))
        t_r.append(trachea_r * 0.7)
    t_s, t_e, t_r = np.array(t_s), np.array(t_e), np.array(t_r)
    vol[_tubes(vol.shape, spacing_zyx, t_s, t_e, t_r + 1.5) & ~lung] = HU["soft_tissue"]
    vol[_tubes(vol.shape, spacing_zyx, t_s, t_e, t_r)] = HU["air"]

    # Spine: vertebral bodies (cortex and cancellous core) separated by discs, canal and posterior arch.
    x_mm = (np.arange(nx) * sx - cx)[None, :]
    y_mm = (np.arange(ny) * sy - cy)[:, None]
    vb_r = rng.uniform(15, 19)
    vb_y = b * 0.72 - vb_r
    r_body = np.hypot(x_mm, y_mm - vb_y)
    canal_y = vb_y + vb_r + 9
    r_canal = np.hypot(x_mm, y_mm - canal_y)
    level = np.mod(np.arange(nz) * sz + rng.uniform(0, 30), rng.uniform(26, 30))[:, None, None]
    is_disc = level < 5.0
    cortex = (r_body <= vb_r)[None]
    core = (r_body <= vb_r - 2.5)[None]
    arch = ((r_canal <= 13) & (r_canal > 8))[None] | (
        (np.abs(x_mm) <= 4) & (y_mm > canal_y) & (y_mm < canal_y + 22)
    )[None]
    vol[np.broadcast_to(cortex, vol.shape) & is_disc] = HU["disc"]
    vol[np.broadcast_to(cortex, vol.shape) & ~is_disc] = HU["bone"]
    vol[np.broadcast_to(core, vol.shape) & ~is_disc] = HU["cancellous"]
    vol[np.broadcast_to(arch, vol.shape) & ~is_disc] = HU["bone"]
    vol[np.broadcast_to((r_canal <= 8)[None], vol.shape)] = HU["csf"]

    # Ribs: thin bony bands just inside the fat layer that slope downward from back to front.
    theta = np.arctan2(Y, X)  # 0 at patient left, +pi/2 posterior, -pi/2 anterior
    rho = np.sqrt(body_r2)
    rib_zone = (rho > 1.0 - fat_frac - 0.07) & (rho < 1.0 - fat_frac - 0.015)
    front = np.abs(theta + np.pi / 2) < np.deg2rad(22)  # costal cartilage gap near the sternum
    rib_period = rng.uniform(22, 26)
    rib_phase = (T * length + 30.0 * (1.0 - np.sin(theta)) + rng.uniform(0, rib_period)) % rib_period
    ribs = rib_zone & ~front & (rib_phase < 7.0) & (T > 0.2)
    vol[ribs] = HU["bone"]
    sternum = (
        (np.abs(X) < 0.08) & (Y < -(1.0 - fat_frac) + 0.12) & (Y > -(1.0 - fat_frac) + 0.02) & (T > 0.35)
    )
    vol[np.broadcast_to(sternum, vol.shape)] = HU["bone"] * 0.7

    # Partial-volume blur, then scanner noise.
    vol = ndimage.gaussian_filter(vol, sigma=0.6, mode="nearest")
    sigma = rng.uniform(15, 25) if noise_hu is None else float(noise_hu)
    vol += rng.normal(0.0, sigma, size=vol.shape).astype(np.float32)
    return np.clip(np.rint(vol), _MIN_HU, _MAX_HU).astype(np.int16)


def add_nodule(
    hu: np.ndarray,
    center_zyx: Sequence[float],
    radius_vox: float | Sequence[float],
    rng: np.random.Generator,
    spiculated: bool = False,
    *,
    lobulated: bool = False,
    density_hu: float = HU["nodule"],
    noise_hu: float = 20.0,
) -> np.ndarray:
    """Paint a solid soft-tissue nodule into ``hu`` (in place) and return its mask.

    The surface radius varies with direction: smooth and nearly round by default, with a few broad bulges
    when ``lobulated``, and with thin tapering spicules radiating outward when ``spiculated`` (spiculated
    nodules are also lobulated, as in the LIDC ratings, where both go with malignancy).

    Args:
        hu: (z, y, x) volume, modified in place (any numeric dtype; values are clipped to its range).
        center_zyx: centre in voxel coordinates (fractional allowed).
        radius_vox: radius in voxels, one number or (z, y, x) for anisotropic voxels.
        rng: randomness for the shape and the texture.
        spiculated: add spicules (and lobulation).
        lobulated: add broad lobulation without spicules.
        density_hu: mean nodule intensity; noise_hu: its texture standard deviation.

    Returns:
        Boolean (z, y, x) mask of the painted voxels (empty if the nodule lies outside the volume).
    """
    if hu.ndim != 3:
        raise ValueError(f"hu must be a (z, y, x) volume, got shape {hu.shape}")
    center = np.asarray(center_zyx, dtype=float)
    radius = np.broadcast_to(np.asarray(radius_vox, dtype=float), (3,)).copy()
    if center.shape != (3,) or np.any(radius <= 0):
        raise ValueError(
            f"need center_zyx of length 3 and positive radius_vox, got {center_zyx}, {radius_vox}"
        )

    n_lobes = 0
    if lobulated or spiculated:
        n_lobes = int(rng.integers(3, 6))
    n_spikes = int(rng.integers(6, 12)) if spiculated else 0
    lobe_dirs = rng.normal(size=(n_lobes, 3))
    lobe_dirs /= np.linalg.norm(lobe_dirs, axis=1, keepdims=True) + 1e-9
    lobe_amp = rng.uniform(0.15, 0.3, size=n_lobes)
    spike_dirs = rng.normal(size=(n_spikes, 3))
    spike_dirs /= np.linalg.norm(spike_dirs, axis=1, keepdims=True) + 1e-9
    spike_len = rng.uniform(1.6, 2.4, size=n_spikes)  # tip distance in radii

    reach = radius * (2.6 if spiculated else 1.4)
    lo = np.maximum(np.floor(center - reach).astype(int), 0)
    hi = np.minimum(np.ceil(center + reach).astype(int) + 1, hu.shape)
    mask = np.zeros(hu.shape, dtype=bool)
    if np.any(hi <= lo):
        return mask
    grids = np.meshgrid(*(np.arange(lo[i], hi[i]) for i in range(3)), indexing="ij")
    # offsets in units of the radius, so anisotropic voxels still give a round nodule in mm
    p = np.stack([(g - c) / r for g, c, r in zip(grids, center, radius, strict=True)], axis=-1)
    dist = np.linalg.norm(p, axis=-1)
    unit = p / np.maximum(dist, 1e-9)[..., None]

    surface = np.ones_like(dist)
    if n_lobes:
        surface += (np.maximum(unit @ lobe_dirs.T, 0.0) ** 4) @ lobe_amp
        surface -= 0.1 * lobe_amp.sum() / max(n_lobes, 1)
    inside = dist <= surface
    if n_spikes:
        along = p @ spike_dirs.T  # projection on each spike axis, in radii
        perp = np.sqrt(np.maximum(dist[..., None] ** 2 - along**2, 0.0))
        frac = np.clip(along / spike_len, 0.0, 1.0)
        width = 0.22 * (1.0 - frac)  # spicules taper to a point at the tip
        inside |= np.any((along > 0) & (along <= spike_len) & (perp <= width), axis=-1)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = inside

    values = density_hu + rng.normal(0.0, noise_hu, size=int(inside.sum()))
    if np.issubdtype(hu.dtype, np.integer):
        info = np.iinfo(hu.dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    hu[mask] = values.astype(hu.dtype)
    return mask
