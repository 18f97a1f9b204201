# The workload of benches/markdown-report and benches/plan-memory: plan_noop's 10,000 Apcera
# jobs in 500 files (as benches/common::write_apcera_jobs writes them), applied to a sandbox,
# then every job changed (`RELEASE` 42 → 43), so a plan is 10,000 updates.
#
# Sourced by bash: `updates_workload BIN DIR` starts `BIN sandbox serve` on loopback (its pid
# in SANDBOX_PID: the caller kills it), writes the manifests into DIR/repo, applies them with
# BIN and changes them, and leaves the shell in DIR/repo.

updates_workload() {
    local bin=$1 dir=$2 url
    "$bin" sandbox serve --listen 127.0.0.1:0 >"$dir/.sandbox" 2>/dev/null &
    SANDBOX_PID=$!
    for _ in $(seq 1 100); do
        [ -s "$dir/.sandbox" ] && break
        sleep 0.1
    done
    url=$(head -1 "$dir/.sandbox" | awk '{print $NF}')
    [ -n "$url" ] || { echo "the sandbox did not start" >&2; return 1; }

    mkdir "$dir/repo"
    cd "$dir/repo"
    printf 'owner: bench\ndefault_namespace: /bench\nvariables:\n  RELEASE: "42"\ntargets:\n  sb:\n    platform: apcera\n    url: %s\ndefault_target: sb\n' "$url" >capstan.yaml
    awk 'BEGIN {
        for (f = 0; f < 500; f++) {
            file = sprintf("svc-%03d.yaml", f)
            printf "jobs:\n" > file
            for (j = 0; j < 20; j++) {
                n = f * 20 + j
                printf "  job::::svc-%05d:\n    state: started\n    num_instances: 1\n    packages:\n      - fqn: package::/apcera/pkg/os::ubuntu-14.04-apc3\n    processes:\n      app:\n        start_command: ./run --id %d\n        environment:\n          SHARD: \"%d\"\n    ports:\n      - number: 8080\n        routes:\n          - type: http\n            endpoint: svc-%05d.example.com\n    resources:\n      memory: 268435456\n    tags:\n      release: ${RELEASE}\n      team: t%d\n", n, n, f, n, f % 7 > file
            }
            close(file)
        }
    }'
    "$bin" apply . --yes --parallelism 64 >"$dir/apply.out" 2>&1 || { tail -20 "$dir/apply.out" >&2; return 1; }
    sed -i 's/RELEASE: "42"/RELEASE: "43"/' capstan.yaml
}
