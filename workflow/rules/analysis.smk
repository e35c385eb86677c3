# Representation analyses of the pretrained encoders: Task 4 organ clustering (OrganMNIST3D, UMAP), zero-shot
# tumour localisation from SA attention, attention-head diversity per Swin stage, and attention-map overlays.


rule demo_organmnist:
    output:
        npz=f"{RESULTS}/demo/organmnist/{ORGANMNIST_NAME}",
    params:
        seed=config["seed"],
        size=DEMO["organmnist"]["size"],
        per_class=DEMO["organmnist"]["per_class"],
    log:
        f"{LOGS}/demo/organmnist.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman organmnist-demo --out {output.npz} --size {params.size} --per-class {params.per_class}"
        " --seed {params.seed} > {log} 2>&1"


rule cluster:
    input:
        organmnist_input,
        encoder=f"{RESULTS}/pretrain/{{method}}/encoder.pt",
    output:
        distances=f"{RESULTS}/tasks/clustering/{{method}}/distances.csv",
        umap=f"{RESULTS}/tasks/clustering/{{method}}/umap.csv",
    params:
        npz=organmnist_npz,
        out=lambda wc, output: Path(output.distances).parent,
        encoder=lambda wc, input: Path(input.encoder).parent,
        split=ORGANS.get("split"),
        embedding=ORGANS.get("embedding"),
        n_neighbors=ORGANS.get("n_neighbors"),
        min_dist=ORGANS.get("min_dist"),
        seed=config["seed"],
    threads: 1
    log:
        f"{LOGS}/tasks/clustering/{{method}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "OMP_NUM_THREADS={threads} dagman cluster --npz {params.npz} --encoder {params.encoder} --out {params.out}"
        " --method {wildcards.method} --split {params.split} --embedding {params.embedding}"
        " --n-neighbors {params.n_neighbors} --min-dist {params.min_dist} --seed {params.seed} > {log} 2>&1"


rule demo_raters:
    output:
        cohort=f"{RESULTS}/demo/raters/raters.csv",
    params:
        out=lambda wc, output: Path(output.cohort).parent,
        seed=config["seed"],
        cases=DEMO["raters"]["cases"],
        raters=DEMO["raters"]["raters"],
    log:
        f"{LOGS}/demo/raters.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "dagman raters-demo --out {params.out} --cases {params.cases} --raters {params.raters}"
        " --seed {params.seed} > {log} 2>&1"


rule zeroshot:
    input:
        cohort=zeroshot_cohort_input,
        encoder=f"{RESULTS}/pretrain/{{method}}/encoder.pt",
    output:
        dice=f"{RESULTS}/tasks/zeroshot/{{method}}/dice.csv",
        summary=f"{RESULTS}/tasks/zeroshot/{{method}}/summary.json",
    params:
        cohort=zeroshot_cohort_csv,
        out=lambda wc, output: Path(output.dice).parent,
        encoder=lambda wc, input: Path(input.encoder).parent,
        percentile=ZEROSHOT.get("percentile"),
        region=ZEROSHOT.get("region"),
        spacing=PREP["spacing"],
        window=" ".join(map(str, PREP["window"])),
    threads: 1
    log:
        f"{LOGS}/tasks/zeroshot/{{method}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "OMP_NUM_THREADS={threads} dagman zeroshot --cohort {params.cohort} --encoder {params.encoder}"
        " --out {params.out} --method {wildcards.method} --percentile {params.percentile}"
        " --region {params.region} --spacing {params.spacing} --window {params.window} > {log} 2>&1"


rule attention_diversity:
    input:
        index=f"{RESULTS}/cache/{DIVERSITY.get('dataset')}/index.csv",
        encoder=f"{RESULTS}/pretrain/{{method}}/encoder.pt",
    output:
        heads=f"{RESULTS}/tasks/diversity/{{method}}/diversity.csv",
        summary=f"{RESULTS}/tasks/diversity/{{method}}/diversity_summary.csv",
    params:
        out=lambda wc, output: Path(output.heads).parent,
        encoder=lambda wc, input: Path(input.encoder).parent,
        max_volumes=DIVERSITY.get("max_volumes"),
    threads: 1
    log:
        f"{LOGS}/tasks/diversity/{{method}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "OMP_NUM_THREADS={threads} dagman attention-diversity --encoder {params.encoder} --index {input.index}"
        " --out {params.out} --method {wildcards.method} --max-volumes {params.max_volumes} > {log} 2>&1"


rule attention_map:
    input:
        image=f"{RESULTS}/series/{ATTENTION_MAPS.get('dataset')}/images/{{key}}.nii.gz",
        encoder=f"{RESULTS}/pretrain/{{method}}/encoder.pt",
    output:
        overlay=f"{RESULTS}/tasks/attention_maps/{{method}}/{{key}}.nii.gz",
    params:
        out=lambda wc, output: Path(output.overlay).parent,
        encoder=lambda wc, input: Path(input.encoder).parent,
        spacing=PREP["spacing"],
        window=" ".join(map(str, PREP["window"])),
    threads: 1
    log:
        f"{LOGS}/tasks/attention_maps/{{method}}/{{key}}.log",
    conda:
        "../../envs/dagman.yaml"
    shell:
        "OMP_NUM_THREADS={threads} dagman attention-map --encoder {params.encoder} --image {input.image}"
        " --out {params.out} --stem {wildcards.key} --method {wildcards.method} --spacing {params.spacing}"
        " --window {params.window} > {log} 2>&1"
