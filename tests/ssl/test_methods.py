"""Method registry: the DESIGN 3.6 table, overrides for the sweeps, stable sweep names, clear errors."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from dagman.ssl.methods import MethodSpec, get_method, list_methods, method_names, sweep_methods

TABLE = {  # name: (backbone, masking, hints > 0, noisy teacher, sa)
    "dagman": ("swin", "attention-high", True, True, True),
    "dagman-no-nt": ("swin", "attention-high", True, False, True),
    "dagman-no-sa": ("swin", "random", False, True, False),
    "smit": ("swin", "random", False, False, False),
    "ibot": ("swin", "blockwise", False, False, False),
    "attmask": ("vit", "attention-high", False, False, False),
    "mst": ("vit", "attention-low", False, False, False),
    "dagman-vit": ("vit", "attention-high", True, True, False),
    "smit-vit": ("vit", "random", False, False, False),
    "ibot-dagman": ("swin", "attention-high", True, True, True),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_registry_matches_design_table(name: str) -> None:
    """Each registered method has the backbone, masking, noisy teacher and SA of DESIGN 3.6 / EXPERIMENTS."""
    spec = get_method(name)
    backbone, masking, hints, nt, sa = TABLE[name]
    assert (spec.backbone, spec.masking, spec.hint_ratio > 0, spec.noisy_teacher, spec.sa) == (
        backbone,
        masking,
        hints,
        nt,
        sa,
    )
    assert spec.pdr == (0.7 if nt else 0.0)


def test_dagman_defaults() -> None:
    """DAGMaN: r 0.7, s 0.1, PDR 0.7, SA at stage 3, AMIP 1 + 0.1 (AMPD, AITD, GITD)."""
    spec = get_method("dagman")
    assert (spec.mask_ratio, spec.hint_ratio, spec.pdr, spec.sa_stage) == (0.7, 0.1, 0.7, 3)
    assert dict(spec.losses) == {"amip": 1.0, "ampd": 0.1, "aitd": 0.1, "gitd": 0.1}
    assert spec.cls_source == "sa" and spec.needs_teacher_attention and spec.experiment == "P1"
    assert get_method("dagman-no-sa").cls_source == "average"
    assert get_method("attmask").cls_source == "vit"
    assert not get_method("smit").needs_teacher_attention


def test_unknown_name_lists_valid_ones() -> None:
    """An unknown method name raises and lists every valid name, sweeps included."""
    with pytest.raises(ValueError) as err:
        get_method("dagmann")
    for name in (*method_names(), "dagman-sa1", "dagman-pdr0.3", "dagman-loss-amip+ampd"):
        assert name in str(err.value)


def test_overrides_for_sweeps() -> None:
    """Overrides change SA stage, PDR (and the noisy-teacher flag with it) and the loss subset."""
    assert get_method("dagman", sa_stage=1).sa_stage == 1
    no_noise = get_method("dagman", pdr=0.0)
    assert no_noise.pdr == 0.0 and not no_noise.noisy_teacher
    sub = get_method("dagman", losses=("amip", "ampd"))
    assert dict(sub.losses) == {"amip": 1.0, "ampd": 0.1, "aitd": 0.0, "gitd": 0.0}
    assert sub.enabled_losses == ("amip", "ampd")
    assert get_method("dagman", losses="amip+aitd").enabled_losses == ("amip", "aitd")
    assert get_method("dagman", losses={"amip": 2.0}).losses["amip"] == 2.0
    with pytest.raises(ValueError, match="unknown MethodSpec field"):
        get_method("dagman", sa_stag=2)
    with pytest.raises(ValueError, match="sa_stage"):
        get_method("dagman", sa_stage=5)
    with pytest.raises(ValueError, match="unknown loss"):
        get_method("dagman", losses=("amip", "mim"))
    with pytest.raises(ValueError, match="SA module"):
        get_method("dagman", sa=False)  # attention-guided masking on Swin needs SA
    with pytest.raises(ValueError, match="contradicts"):
        get_method("dagman", pdr=0.5, noisy_teacher=False)


def test_sweep_names_and_experiments() -> None:
    """Sweep variants P11-P23 have stable names and change only the swept setting."""
    sweeps = sweep_methods()
    assert list(sweeps) == [
        "dagman-sa1", "dagman-sa2", "dagman-sa4",
        "dagman-pdr0.0", "dagman-pdr0.1", "dagman-pdr0.3", "dagman-pdr0.5", "dagman-pdr0.9",
        "dagman-loss-amip", "dagman-loss-amip+ampd", "dagman-loss-amip+ampd+aitd",
        "dagman-loss-amip+aitd+gitd", "dagman-loss-ampd+aitd+gitd",
    ]  # fmt: skip
    assert [s.experiment for s in sweeps.values()] == [f"P{i}" for i in range(11, 24)]
    assert sweeps["dagman-pdr0.0"].noisy_teacher is False
    assert sweeps["dagman-loss-ampd+aitd+gitd"].losses["amip"] == 0.0
    base = dataclasses.asdict(get_method("dagman"))
    for name, spec in sweeps.items():
        diff = {k for k, v in dataclasses.asdict(spec).items() if base[k] != v}
        assert diff <= {"name", "experiment", "description", "sa_stage", "pdr", "noisy_teacher", "losses"}, (
            name
        )
        assert get_method(name) == spec
    assert set(list_methods()) == set(method_names()) | set(sweeps)


def test_spec_is_frozen_serialisable_and_hashable() -> None:
    """Specs cannot be mutated, survive JSON and pickle (checkpoints), and can be hashed."""
    spec = get_method("dagman")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.pdr = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        spec.losses["amip"] = 0.0
    assert json.loads(json.dumps(spec.to_dict()))["losses"]["ampd"] == 0.1
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert len({spec, get_method("dagman"), get_method("smit")}) == 2
    assert isinstance(spec, MethodSpec)
