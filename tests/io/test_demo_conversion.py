"""The demo cohort through the converter: every broken input is quarantined (or dropped) with the reason the
synthesiser planted, every good series converts to exactly the geometry and HU values that were written, and
no fake identifier reaches any output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dagman.io.convert import convert_tree
from dagman.io.dicom_series import make_case_id
from dagman.io.synthetic import FAKE_IDENTIFIERS, demo_case_volume, write_demo_cohort

SHAPE, SPACING, SEED, CASES = (24, 48, 48), (2.8, 2.8, 2.5), 3, 5


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    manifest = write_demo_cohort(root, seed=SEED, n_cases=CASES, shape=SHAPE, spacing=SPACING)
    (root / "dicom" / ".snakemake_timestamp").write_text("tool bookkeeping, not DICOM")
    out = root / "converted"
    convert_tree(root / "dicom", out, workers=1, progress=False)
    series = pd.read_csv(out / "series.csv", keep_default_na=False)
    quarantine = pd.read_csv(out / "quarantine.csv", keep_default_na=False)
    return manifest, series, quarantine, out


def test_every_manifest_series_has_its_expected_outcome(converted):
    manifest, series, quarantine, _ = converted
    for row in manifest.itertuples():
        converted_here = row.series_uid in set(series.series_uid)
        assert converted_here == (row.expected == "convert"), row.kind
        if row.expected_reason_code:
            codes = set(quarantine.loc[quarantine.series_uid == row.series_uid, "reason_code"])
            assert row.expected_reason_code in codes, (row.kind, codes)


def test_good_series_match_the_synthesiser_ground_truth(converted):
    manifest, series, _, out = converted
    good = manifest[manifest.kind == "good"]
    assert len(good) == CASES
    for index, row in enumerate(good.itertuples()):
        hu, geometry = demo_case_volume(SEED, index, SHAPE, SPACING)
        match = series[series.series_uid == row.series_uid].iloc[0]
        assert match.case_id == make_case_id(row.patient_id)
        image = sitk.ReadImage(str(out / match.image))
        assert image.GetPixelID() == sitk.sitkInt16
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), hu)
        np.testing.assert_allclose(image.GetSpacing(), geometry["spacing"], atol=1e-6)
        np.testing.assert_allclose(image.GetOrigin(), geometry["origin"], atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), geometry["direction"], atol=1e-6)


def test_no_fake_identifier_in_any_output(converted):
    *_, out = converted
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in FAKE_IDENTIFIERS:
                assert value.encode() not in data and value not in path.name, (path, value)


def test_hidden_files_are_not_inputs(converted):
    """Hidden files (Snakemake's directory timestamps, macOS ._ files) are skipped, not quarantined."""
    _, _, quarantine, _ = converted
    assert not quarantine["file"].str.contains(".snakemake_timestamp", regex=False).any()
