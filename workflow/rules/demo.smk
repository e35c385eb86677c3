# The synthetic demo cohort, written by the pipeline itself as real DICOM.


rule demo_chest:
    output:
        manifest=f"{RESULTS}/demo/chest/manifest.csv",
        dicom=directory(f"{RESULTS}/demo/chest/dicom"),
    params:
        out=lambda wc, output: Path(output.manifest).parent,
        seed=config["seed"],
        cases=DEMO["chest"]["cases"],
        shape=" ".join(map(str, DEMO["chest"]["shape"])),
        spacing=" ".join(map(str, DEMO["chest"]["spacing"])),
    log:
        f"{LOGS}/demo/chest.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman demo --out {params.out} --seed {params.seed} --cases {params.cases}"
        " --shape {params.shape} --spacing {params.spacing} > {log} 2>&1"


rule demo_lidc:
    output:
        manifest=f"{RESULTS}/demo/lidc/manifest.csv",
        dicom=directory(f"{RESULTS}/demo/lidc/dicom"),
    params:
        out=lambda wc, output: Path(output.manifest).parent,
        seed=config["seed"],
        scans=DEMO["lidc"]["scans"],
        max_slices=DEMO["lidc"]["max_slices"],
    threads: 4  # scaled down to --cores
    log:
        f"{LOGS}/demo/lidc.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman lidc-demo --out {params.out} --seed {params.seed} --n-scans {params.scans}"
        " --max-slices {params.max_slices} --workers {threads} > {log} 2>&1"
