# DICOM series discovery and conversion (a checkpoint: later rules follow the series actually found),
# then isotropic resampling into the training cache, one job per series.


checkpoint convert:
    input:
        demo_input,
    output:
        series=f"{RESULTS}/series/{{dataset}}/series.csv",
        quarantine=f"{RESULTS}/series/{{dataset}}/quarantine.csv",
    params:
        root=lambda wc: dicom_root(wc.dataset),
        out=lambda wc, output: Path(output.series).parent,
        case_ids=lambda wc: DATASETS[wc.dataset].get("case_ids", "pseudonym"),
        min_slices=PREP["min_slices"],
        tolerance=PREP["spacing_tolerance"],
    threads: 4  # scaled down to --cores
    log:
        f"{LOGS}/series/{{dataset}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman convert {params.root} --out {params.out}"
        " --case-ids {params.case_ids} --min-slices {params.min_slices}"
        " --spacing-tolerance {params.tolerance} --workers {threads} > {log} 2>&1"


rule resample_series:
    input:
        series=f"{RESULTS}/series/{{dataset}}/series.csv",
    output:
        array=f"{RESULTS}/cache/{{dataset}}/arrays/{{key}}.npy",
        image=f"{RESULTS}/cache/{{dataset}}/images/{{key}}.nii.gz",
    params:
        out=lambda wc, output: Path(output.array).parent.parent,
        spacing=PREP["spacing"],
        window=" ".join(map(str, PREP["window"])),
    log:
        f"{LOGS}/cache/{{dataset}}/{{key}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman resample --series {input.series} --out {params.out}"
        " --only {wildcards.key} --spacing {params.spacing} --window {params.window} > {log} 2>&1"


rule cache_index:
    input:
        series=f"{RESULTS}/series/{{dataset}}/series.csv",
        arrays=cached_arrays,
    output:
        index=f"{RESULTS}/cache/{{dataset}}/index.csv",
    params:
        out=lambda wc, output: Path(output.index).parent,
        spacing=PREP["spacing"],
        window=" ".join(map(str, PREP["window"])),
    log:
        f"{LOGS}/cache/{{dataset}}/index.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman resample --series {input.series} --out {params.out}"
        " --index-only --spacing {params.spacing} --window {params.window} > {log} 2>&1"
