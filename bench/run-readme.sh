#!/usr/bin/env bash
# Reproduces the runs in bench/README.md on this host: builds the bench and the
# engine's pub/sub example, starts it and the Bun peer pinned to CPU 0, runs
# every workload against both from CPU 1, and writes the summaries, JSON and
# charts to bench/results/. Every run targets 127.0.0.1 and ends by itself.
#
#   bash bench/run-readme.sh            # all workloads
#   bash bench/run-readme.sh echo       # one of: echo fanout connect
#
# Needs bun (npm install -g bun) and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
out=bench/results
mkdir -p "$out"

command -v bun >/dev/null || { echo "bun is missing: npm install -g bun" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is missing: apt-get install util-linux" >&2; exit 1; }

cargo build --release -p ringhub-bench
cargo build --release -p ringhub-engine --example pubsub
bench=$CARGO_TARGET_DIR/release/ringhub-bench
pubsub=$CARGO_TARGET_DIR/release/examples/pubsub

servers=()
stop_servers() {
    for pid in "${servers[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null || true; done
    servers=()
}
trap stop_servers EXIT

# Fresh servers for every workload, so RSS per connection starts from idle.
start_servers() {
    stop_servers
    taskset -c 0 "$pubsub" --host 127.0.0.1 --port 9000 --cores 1 2>"$out/ringhub.log" &
    ringhub=$!
    taskset -c 0 bun bench/peers/bun-pubsub.js --port 9001 >"$out/bun.log" 2>&1 &
    bun_pid=$!
    servers=("$ringhub" "$bun_pid")
    for port in 9000 9001; do
        for _ in $(seq 50); do
            (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
            sleep 0.1
        done
    done
}

run() {
    local name=$1; shift
    start_servers
    echo "== $name: taskset -c 1 ringhub-bench $* --compare ws://127.0.0.1:9000/,ws://127.0.0.1:9001/"
    echo "   host: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    taskset -c 1 "$bench" "$@" \
        --compare ws://127.0.0.1:9000/,ws://127.0.0.1:9001/ --server-pid "$ringhub,$bun_pid" \
        --chart "$out/$name.svg" --quiet | tee "$out/$name.txt" || true
}

workloads=${1:-echo fanout connect}
for w in $workloads; do
    case $w in
        echo) run echo echo -n 100 --in-flight 16 --size 64 -d 10 ;;
        fanout)
            run fanout fanout -n 1000 --publishers 1 --size 64 --rate 200 -d 10
            # Five times the rate: a million deliveries a second asked for.
            run fanout-1000 fanout -n 1000 --publishers 1 --size 64 --rate 1000 -d 10 --drain 20
            # As fast as possible: 5 million asked, what is carried is the figure.
            run fanout-max fanout -n 1000 --publishers 1 --size 64 --rate 5000 -d 10 --drain 20
            ;;
        connect)
            run connect-10k connect -n 10000 --hold 5
            # Past one process's 20,000 descriptors the bench starts worker processes.
            # Bun holds at most its own RLIMIT_NOFILE; the engine uses io_uring fixed files.
            run connect-30k connect -n 30000 --hold 5 --connect-timeout 2
            ;;
        *) echo "unknown workload $w (echo, fanout, connect)" >&2; exit 2 ;;
    esac
done
