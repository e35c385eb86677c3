# Self-supervised pretraining: one job per run (a registry method, or a named variant of one on other data or
# settings), every method a configuration of one engine.
# An interrupted job (SIGTERM at a SLURM time limit) leaves checkpoint.pt behind; rerunning resumes from it.
# --restart-stale: a checkpoint of changed settings, or a finished one (--forcerun), moves to stale-<n>/ and
# training restarts at step 0.


rule pretrain:
    input:
        indexes=pretrain_indexes,
    output:
        encoder=f"{RESULTS}/pretrain/{{method}}/encoder.pt",
        metrics=f"{RESULTS}/pretrain/{{method}}/metrics.csv",
        summary=f"{RESULTS}/pretrain/{{method}}/summary.json",
    params:
        out=lambda wc, output: Path(output.encoder).parent,
        caches=lambda wc, input: " ".join(str(Path(i).parent) for i in input.indexes),
        method=lambda wc: registry_method(wc.method),
        settings=lambda wc: pretrain_settings_json(wc.method),
        launcher=pretrain_launcher,
    threads: PRETRAIN.get("threads", 1)
    resources:
        gpu=PRETRAIN.get("gpus", 0),
        mem_mb=PRETRAIN.get("mem_mb", 16000),
        runtime=PRETRAIN.get("runtime", 60),
    log:
        f"{LOGS}/pretrain/{{method}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "OMP_NUM_THREADS={threads} {params.launcher} pretrain --method {params.method}"
        " --cache {params.caches} --out {params.out} --settings {params.settings:q} --restart-stale > {log} 2>&1"
