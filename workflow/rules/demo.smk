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
