# Tasks 1 and 3: linear probing and fine-tuning of every method on every fold and regime, the held-out test
# evaluated once per trained model, then per-method summaries and paired comparisons.


rule demo_outcome:
    output:
        cohort=f"{RESULTS}/demo/outcome/cohort.csv",
        dicom=directory(f"{RESULTS}/demo/outcome/dicom"),
    params:
        out=lambda wc, output: Path(output.cohort).parent,
        seed=config["seed"],
        cases=DEMO["outcome"]["cases"],
        positive=DEMO["outcome"]["positive_fraction"],
    threads: 4  # scaled down to --cores
    log:
        f"{LOGS}/demo/outcome.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman outcome-demo --out {params.out} --seed {params.seed} --cases {params.cases}"
        " --positive-fraction {params.positive} --workers {threads} --quiet > {log} 2>&1"


rule outcome_crops:
    input:
        outcome_cohort_input,
    output:
        crops=f"{RESULTS}/outcome/crops/crops.csv",
    params:
        cohort=outcome_cohort_csv,
        out=lambda wc, output: Path(output.crops).parent,
        spacing=PREP["spacing"],
        crop_size=OUTCOME.get("crop_size"),
    threads: 4  # scaled down to --cores
    log:
        f"{LOGS}/outcome/crops.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman cohort-crops --cohort {params.cohort} --out {params.out} --spacing {params.spacing}"
        " --crop-size {params.crop_size} --workers {threads} --quiet > {log} 2>&1"


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        metrics=f"{RESULTS}/tasks/classification/runs/{{task}}/{{method}}/{{mode}}/f{{fraction}}/fold{{fold}}/metrics.json",
        predictions=f"{RESULTS}/tasks/classification/runs/{{task}}/{{method}}/{{mode}}/f{{fraction}}/fold{{fold}}/predictions.csv",
    params:
        out=lambda wc, output: Path(output.metrics).parent,
        encoder=finetune_encoder_args,
        settings=classification_settings_json,
    threads: 1
    resources:
        gpu=settings_gpus(CLASSIFICATION.get("settings", {})),
    log:
        f"{LOGS}/tasks/classification/{{task}}/{{method}}/{{mode}}/f{{fraction}}/fold{{fold}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "OMP_NUM_THREADS={threads} dagman finetune --table {input.table} --splits {input.splits} {params.encoder}"
        " --mode {wildcards.mode} --fraction {wildcards.fraction} --fold {wildcards.fold}"
        " --method {wildcards.method} --task {wildcards.task} --out {params.out}"
        " --settings {params.settings:q} --quiet > {log} 2>&1"


rule classification_summary:
    input:
        runs=classification_runs,
    output:
        results=f"{RESULTS}/tasks/classification/results.csv",
        summary=f"{RESULTS}/tasks/classification/summary.csv",
        comparisons=f"{RESULTS}/tasks/classification/comparisons.csv",
    params:
        out=lambda wc, output: Path(output.results).parent,
        runs=lambda wc, input: " ".join(str(Path(m).parent) for m in input.runs),
        reference=CLASSIFICATION.get("reference"),
        seed=config["seed"],
    log:
        f"{LOGS}/tasks/classification/summary.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman classification-summary --inputs {params.runs} --out {params.out}"
        " --reference {params.reference} --seed {params.seed} > {log} 2>&1"
