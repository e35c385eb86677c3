# Task 2: tumour segmentation. NSCLC-style CT + RTSTRUCT cases train SwinUNETR with each pretrained encoder
# (decoder from scratch); Dice per case on the LIDC nodules larger than 3 cc and, where the config says so, on the
# labelled cohort's tumour masks. nnU-Net is the baseline.


rule demo_nsclc:
    output:
        dicom=directory(f"{RESULTS}/demo/nsclc/dicom"),
    params:
        out=lambda wc, output: Path(output.dicom).parent,
        seed=config["seed"],
        cases=DEMO["nsclc"]["cases"],
    log:
        f"{LOGS}/demo/nsclc.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman nsclc-demo --out {params.out} --seed {params.seed} --cases {params.cases} > {log} 2>&1"


rule nsclc_cases:
    input:
        nsclc_root_input,
    output:
        cases=f"{RESULTS}/nsclc/cases.csv",
        report=f"{RESULTS}/nsclc/report.csv",
    params:
        root=nsclc_root,
        out=lambda wc, output: Path(output.cases).parent,
        spacing=PREP["spacing"],
        case_ids=NSCLC.get("case_ids"),
        roi_names=" ".join(f"'{n}'" for n in NSCLC.get("roi_names", [])),
    threads: 4  # scaled down to --cores
    log:
        f"{LOGS}/nsclc/cases.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman nsclc --dicom-root {params.root} --out {params.out} --roi-names {params.roi_names}"
        " --spacing {params.spacing} --case-ids {params.case_ids} --workers {threads} > {log} 2>&1"


rule segment:
    input:
        unpack(segment_inputs),
    output:
        dice=f"{RESULTS}/tasks/segmentation/{{method}}/f{{fraction}}/dice.csv",
        metrics=f"{RESULTS}/tasks/segmentation/{{method}}/f{{fraction}}/metrics.json",
    params:
        out=lambda wc, output: Path(output.dice).parent,
        tests=segmentation_test_args,
        encoder=segment_encoder_args,
        settings=json.dumps(SEGMENTATION.get("settings", {}), sort_keys=True),
    threads: 1
    resources:
        gpu=settings_gpus(SEGMENTATION.get("settings", {})),
    log:
        f"{LOGS}/tasks/segmentation/{{method}}/f{{fraction}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "OMP_NUM_THREADS={threads} dagman segment --train {input.train} {params.tests}"
        " {params.encoder} --fraction {wildcards.fraction} --out {params.out}"
        " --settings {params.settings:q} --quiet > {log} 2>&1"


ruleorder: nnunet > segment


rule nnunet:
    input:
        train=f"{RESULTS}/nsclc/cases.csv",
        tests=lambda wc: list(segmentation_tests().values()),
    output:
        dice=f"{RESULTS}/tasks/segmentation/nnunet/f{{fraction}}/dice.csv",
    params:
        out=lambda wc, output: Path(output.dice).parent,
        tests=segmentation_test_args,
        settings=json.dumps(SEGMENTATION.get("nnunet", {}).get("settings", {}), sort_keys=True),
    threads: 4  # scaled down to --cores
    resources:
        gpu=1 if PRETRAIN.get("gpus", 0) else 0,
    log:
        f"{LOGS}/tasks/segmentation/nnunet/f{{fraction}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman nnunet --train {input.train} {params.tests} --fraction {wildcards.fraction}"
        " --out {params.out} --settings {params.settings:q} --quiet > {log} 2>&1"
