#!/usr/bin/env bash
# Cross-server figures of bench/README.md ("Across servers"): two ringhub
# servers on one loopback Redis, standalone and as a 6-node Redis Cluster
# (3 masters + 3 replicas). Both servers are pinned to CPU 0, Redis and the
# load generator to CPU 1. Runs `direct` at 10k, 50k and an unreachable rate
# (the maximum), then `mixed`, and prints for each: throughput, latency
# percentiles, Redis commands per delivered message (INFO commandstats of
# every node, read by the bench at the go and at the end) and the servers'
# CPU per message (/proc/<pid>/stat, likewise). `go-design` measures what the
# original design's SMEMBERS + EXISTS + PUBLISH per message cost Redis.
#
#   bash bench/run-cross.sh                 # standalone, cluster, go-design
#   bash bench/run-cross.sh standalone      # or: cluster, go-design
#   DURATION=5 PAIRS=200 bash bench/run-cross.sh
#
# Everything listens on 127.0.0.1 on free ports, stops by itself (each run is
# bounded by DURATION + drain) and is cleaned up on exit, even on Ctrl-C.
# Needs redis-server, redis-cli (apt-get install redis-server redis-tools),
# taskset (util-linux) and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

modes=${1:-standalone cluster go-design}
DURATION=${DURATION:-10}
PAIRS=${PAIRS:-100}
USERS=${USERS:-2000}
MIXED_RATE=${MIXED_RATE:-5000}
MAX_RATE=${MAX_RATE:-1000000}
out=${OUT:-bench/results/cross}
mkdir -p "$out"

for tool in redis-server redis-cli taskset jq; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing: apt-get install redis-server redis-tools util-linux jq" >&2
        exit 1
    }
done
# Thousands of sockets on both ends; 20,000 is this machine's hard limit.
ulimit -n "$(ulimit -Hn)"

cargo build --profile bench -p ringhub --bin ringhub
cargo build --profile bench -p ringhub-bench
# The bench profile writes to release/.
ringhub=$CARGO_TARGET_DIR/release/ringhub
bench=$CARGO_TARGET_DIR/release/ringhub-bench

work=$(mktemp -d /tmp/ringhub-cross.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets $port to a port nobody listens on, with its cluster bus port (+10000)
# free too, and never the same twice in a run (not in a subshell: it counts).
# Both stay below the ephemeral range, where outgoing connections would take
# them without listening.
next_port=$((11000 + RANDOM % 8000))
free_port() {
    while :; do
        next_port=$((next_port + 1))
        if ! (exec 3<>/dev/tcp/127.0.0.1/$next_port) 2>/dev/null &&
            ! (exec 3<>/dev/tcp/127.0.0.1/$((next_port + 10000))) 2>/dev/null; then
            port=$next_port
            return
        fi
    done
}

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after 10 s" >&2
    return 1
}

redis_nodes=()
start_redis() { # standalone|cluster
    redis_nodes=()
    local count=1 extra=()
    if [ "$1" = cluster ]; then
        count=6
    fi
    for _ in $(seq "$count"); do
        free_port
        if [ "$1" = cluster ]; then
            extra=(--cluster-enabled yes --cluster-config-file "$work/nodes-$port.conf"
                --cluster-node-timeout 5000)
        fi
        taskset -c 1 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --protected-mode no --dir "$work" --logfile "$work/redis-$port.log" "${extra[@]}" &
        pids+=($!)
        redis_nodes+=("127.0.0.1:$port")
    done
    for node in "${redis_nodes[@]}"; do wait_port "${node#*:}"; done
    if [ "$1" = cluster ]; then
        redis-cli --cluster create "${redis_nodes[@]}" --cluster-replicas 1 --cluster-yes \
            >"$work/cluster-create.log"
        for node in "${redis_nodes[@]}"; do
            for _ in $(seq 100); do
                redis-cli -p "${node#*:}" cluster info | grep -q cluster_state:ok && break
                sleep 0.1
            done
        done
    fi
}

server_pids=()
server_urls=()
start_servers() { # seeds, mode
    server_pids=()
    server_urls=()
    for name in a b; do
        free_port
        # One core for both servers, so one reactor thread each. The bench
        # senders go far past the default 100 msgs/s per connection.
        RINGHUB_LOG=warn taskset -c 0 "$ringhub" --listen "127.0.0.1:$port" --threads 1 \
            --redis "$1" --server-id "bench-$name" \
            --message-rate 10000000 --message-burst 10000000 \
            2>"$out/$2-ringhub-$name.log" &
        pids+=($!)
        server_pids+=($!)
        server_urls+=("ws://127.0.0.1:$port/ws")
        wait_port "$port"
    done
}

# "<server>/<thread> <utime+stime ticks>" for every thread of the servers, sorted for join.
thread_ticks() {
    local names=(a b) i=0 pid task
    for pid in "${server_pids[@]}"; do
        for task in /proc/"$pid"/task/*; do
            printf '%s/%s %s\n' "${names[i]}" "$(cat "$task/comm" 2>/dev/null)" \
                "$(awk '{ print $14 + $15 }' "$task/stat" 2>/dev/null)"
        done
        i=$((i + 1))
    done | LC_ALL=C sort
}

stop_all() {
    cleanup
    work=$(mktemp -d /tmp/ringhub-cross.XXXXXX)
}

# One bench run from CPU 1; the summary to the terminal and a file, the
# JSON next to it.
run() { # name, bench args...
    local name=$1
    shift
    local targets pids_csv nodes
    targets=$(IFS=,; echo "${server_urls[*]}")
    pids_csv=$(IFS=,; echo "${server_pids[*]}")
    if [ "${ONE_SERVER:-0}" = 1 ]; then
        # Both ends on server A: the same path without Redis, for reference.
        targets=${server_urls[0]}
        pids_csv=${server_pids[0]}
    fi
    nodes=$(IFS=,; echo "${redis_nodes[*]}")
    echo "== $name: ringhub-bench $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    local threads_before
    threads_before=$(thread_ticks)
    taskset -c 1 "$bench" "$@" --target "$targets" --server-pid "$pids_csv" \
        --redis-nodes "$nodes" -d "$DURATION" --quiet --json >"$out/$name.json" || true
    # Where the servers' CPU went, thread by thread, over the whole run.
    LC_ALL=C join -a 2 -e 0 -o 0,1.2,2.2 <(echo "$threads_before") <(thread_ticks) |
        awk -v hz="$(getconf CLK_TCK)" '$3 > $2 { printf "  %s %.2f s", $1, ($3 - $2) / hz } END { print "" }' \
        >"$out/$name.threads"
    jq -r '.[] | "  sent \(.counters.sent)  delivered \(.counters.unique)/\(.expected)  lost \(.lost)  dup \(.counters.duplicates)  errors \(.counters.errors)
  throughput \(.throughput | floor) msgs/s   p50 \(.latency.p50_us) µs  p99 \(.latency.p99_us)  p99.9 \(.latency.p999_us)  max \(.latency.max_us)
  redis \(.redis.per_delivery // "-") commands/msg, \((.redis.cpu_ns_per_delivery // 0) / 1000 * 100 | floor / 100) µs Redis CPU/msg \(.redis.by_command)
  servers \((.server.cpu_ns_per_delivery // 0) / 1000 * 100 | floor / 100) µs CPU/msg (both, measured phase); generator busiest thread \(.generator_cpu_max * 100 | floor) %\(if .generator_saturated then " SATURATED" else "" end)
  host \(.host_cpus) CPUs, load average \(.host_load)"' "$out/$name.json" | tee "$out/$name.txt"
    echo "  server threads (CPU over the whole run):$(cat "$out/$name.threads")" | tee -a "$out/$name.txt"
}

redis_cpu_ns() { # port: used_cpu_user + used_cpu_sys, in ns
    redis-cli -p "$1" info cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.0f", s * 1e9 }'
}

# What the original Go design's three commands per message cost Redis:
# redis-benchmark sends SMEMBERS, EXISTS and PUBLISH (to a channel with one
# subscriber, as a server would be) pipelined 16 deep, its best case, from
# CPU 0 while Redis has CPU 1; Redis's own CPU time per command comes from
# INFO cpu before and after each.
go_design() {
    start_redis standalone
    local port=${redis_nodes[0]#*:}
    redis-cli -p "$port" sadd user_servers:u1 bench-a bench-b >/dev/null
    redis-cli -p "$port" set server:bench-b:alive 1 >/dev/null
    taskset -c 0 redis-cli -p "$port" subscribe server:bench-b >/dev/null &
    pids+=($!)
    local payload n=300000 depth
    payload=$(printf '%*s' 100 '' | tr ' ' x)
    : >"$out/go-design.txt"
    # One command per round trip, as the original server sent them, and 16 deep.
    for depth in 1 16; do
        local total=0
        echo "== go-design: redis-benchmark -c 50 -P $depth -n $n, Redis on CPU 1 (load average $(cut -d' ' -f1-3 /proc/loadavg))" |
            tee -a "$out/go-design.txt"
        for command in "smembers user_servers:u1" "exists server:bench-b:alive" "publish server:bench-b $payload"; do
            local before after
            before=$(redis_cpu_ns "$port")
            # shellcheck disable=SC2086 # the command's words are separate arguments
            taskset -c 0 redis-benchmark -p "$port" -c 50 -P "$depth" -n "$n" -q $command >/dev/null
            after=$(redis_cpu_ns "$port")
            total=$((total + (after - before) / n))
            echo "  ${command%% *}: $(((after - before) / n)) ns of Redis CPU per command" | tee -a "$out/go-design.txt"
        done
        echo "  SMEMBERS + EXISTS + PUBLISH: $total ns of Redis CPU per message" | tee -a "$out/go-design.txt"
    done
}

for mode in $modes; do
    case $mode in
        standalone | cluster) ;;
        go-design) stop_all; go_design; continue ;;
        *) echo "unknown mode $mode (standalone, cluster, go-design)" >&2; exit 2 ;;
    esac
    stop_all
    start_redis "$mode"
    seeds=$(printf 'redis://%s,' "${redis_nodes[@]}")
    start_servers "${seeds%,}" "$mode"
    echo "### $mode: Redis ${redis_nodes[*]}; servers ${server_urls[*]} (pids ${server_pids[*]})"
    echo "    host: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
    if [ "$mode" = standalone ]; then
        ONE_SERVER=1 run one-server-direct-10k direct --pairs "$PAIRS" --rate 10000 --drain 10
    fi
    run "$mode-direct-10k" direct --pairs "$PAIRS" --rate 10000 --drain 10
    run "$mode-direct-50k" direct --pairs "$PAIRS" --rate 50000 --drain 10
    run "$mode-direct-max" direct --pairs "$PAIRS" --rate "$MAX_RATE" --drain 30
    run "$mode-mixed" mixed --users "$USERS" --rooms 200 --rooms-per-user 4 \
        --publish-share 0.2 --rate "$MIXED_RATE" --drain 10
done

# The README's table, one row per run made above.
{
    echo "| run | delivered / owed | throughput msgs/s | p50 ms | p99 ms | p99.9 ms | Redis cmds/msg | Redis CPU µs/msg | servers CPU µs/msg | load avg |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for f in "$out"/one-server-direct-10k.json "$out"/{standalone,cluster}-{direct-10k,direct-50k,direct-max,mixed}.json; do
        [ -e "$f" ] || continue
        jq -r --arg name "$(basename "$f" .json)" '.[0] |
            def ms: . / 1000 | . * 100 | round / 100;
            def us: (. // 0) / 1000 | . * 10 | round / 10;
            "| \($name) | \(.counters.unique) / \(.expected) | \(.throughput | round) | \(.latency.p50_us | ms) | \(.latency.p99_us | ms) | \(.latency.p999_us | ms) | \((.redis.per_delivery // 0) * 1000 | round / 1000) | \(.redis.cpu_ns_per_delivery | us) | \(.server.cpu_ns_per_delivery | us) | \(.host_load) |"' "$f"
    done
} >"$out/table.md"
echo "table: $out/table.md"
