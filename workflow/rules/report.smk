# The papers' tables and figures, made only from the result files of the earlier stages and only for the
# experiments this config ran; `snakemake --report results/<run>/report.html` packs them with their captions.


rule tables:
    input:
        unpack(report_inputs),
    output:
        [
            report(f"{RESULTS}/tables/{name}.{ext}", caption=caption("tables", name), category="Tables",
                   subcategory=name, labels={"table": name, "format": ext})
            for name in PLANNED_TABLES
            for ext in TABLE_EXTENSIONS
        ],
    params:
        flags=report_flags,
        out=lambda wc, output: Path(output[0]).parent,
    log:
        f"{LOGS}/report/tables.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman tables {params.flags} --out {params.out} > {log} 2>&1"


rule figures:
    input:
        unpack(report_inputs),
        attention_maps=attention_map_targets,
    output:
        [
            report(f"{RESULTS}/figures/{name}.png", caption=caption("figures", name), category="Figures",
                   labels={"figure": name})
            for name in PLANNED_FIGURES
        ],
        [f"{RESULTS}/figures/{name}.pdf" for name in PLANNED_FIGURES],
    params:
        flags=report_flags,
        out=lambda wc, output: Path(output[0]).parent,
    log:
        f"{LOGS}/report/figures.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "MPLBACKEND=Agg dagman figures {params.flags} --out {params.out} > {log} 2>&1"

