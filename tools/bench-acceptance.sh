#!/usr/bin/env bash
# Issue 5's measurement in one run: the machine's ceilings, then the same
# workloads against Sluice and (if its binary is given) tansu, one broker at a
# time on 127.0.0.1, each on a fresh data dir:
#   max throughput, 1 KiB, acks=1 and acks=all   (workloads/max-throughput-1k.toml)
#   max produce only, acks=1, 4 producers with 1 MiB batches and 20 ms linger
#                                                 (the same workload, no consumers)
#   fixed rate at a quarter of Sluice's acks=all maximum, acks=all
#                                                 (workloads/fixed-rate-latency-1k.toml)
#   catch-up read of a backlog                    (workloads/catch-up.toml)
#   Sluice only, last: the catch-up again with io_mode=buffered and
#   fetch.splice.enable=true (records spliced from the page cache)
# Every test gets a freshly started broker on an empty data dir. Sluice keeps
# at most 1 GiB per partition (log.retention.bytes, 256 MiB segments, checked
# every 5 s), so that the max-throughput tests, which write tens of GB, do not
# fill the disk.
# During every max-throughput and fixed-rate test, `perf record -a` (if perf
# is installed) samples every thread for 20 s and `cpu.txt` beside the result
# splits the machine's CPU time by thread name: broker shards, io_uring
# workers, the librdkafka client threads, idle.
#
# Usage: tools/bench-acceptance.sh OUT [TANSU_BINARY]
#   env: SLUICE (binary, default target/release/sluice), CEILINGS (path to the
#   ceilings script; skipped if unset or missing), DATA_PARENT (where brokers
#   keep data; default OUT), TEST_SECONDS (60), WARMUP_SECONDS (10),
#   BACKLOG_GB (4), PORT (29092), SMP (2).
# Results: OUT/<broker>/<test>/{result.json,result.md,latency.svg,cpu.txt},
# OUT/summary.md (one comparison table per test), OUT/ceilings.md, OUT/run.log.
set -euo pipefail
out=${1:?usage: tools/bench-acceptance.sh OUT [TANSU_BINARY]}
tansu=${2:-}
sluice=${SLUICE:-target/release/sluice}
test_s=${TEST_SECONDS:-60}
warm_s=${WARMUP_SECONDS:-10}
backlog=${BACKLOG_GB:-4}
port=${PORT:-29092}
smp=${SMP:-2}
data_parent=${DATA_PARENT:-$out}
mkdir -p "$out" "$data_parent"
out=$(cd "$out" && pwd)
boot=127.0.0.1:$port
broker_pid=

log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$out/run.log"; }

stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$broker_pid" 2>/dev/null || true
    broker_pid=
  fi
}
trap stop_broker EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "broker did not listen on $boot" >&2
  return 1
}

start_broker() { # name [sluice --set ...]
  local name=$1 data="$data_parent/$1-data"
  shift
  rm -rf "$data"
  mkdir -p "$data"
  case $name in
    sluice) "$sluice" start --listen "$boot" --data-dir "$data" --smp "$smp" \
              --set stall.detector.interval.ms=1000 --set log.retention.bytes=1073741824 \
              --set log.segment.bytes=268435456 --set log.retention.check.interval.ms=5000 \
              "$@" >>"$out/$name.log" 2>&1 &
            broker_pid=$! ;;
    tansu) "$tansu" broker --listener-url "tcp://$boot" --advertised-listener-url "tcp://$boot" \
              --storage-engine memory://tansu/ >>"$out/$name.log" 2>&1 &
           broker_pid=$! ;;
  esac
  wait_port
}

# CPU time by thread name over 20 s, starting once the test phase runs.
profile() { # dir delay
  command -v perf >/dev/null || return 0
  sleep "$2"
  perf record -a -e cpu-clock -F 499 -o "$1/perf.data" -- sleep 20 >/dev/null 2>&1 || return 0
  perf report -i "$1/perf.data" --sort comm --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' \
    | head -25 >"$1/cpu.txt" || true
  rm -f "$1/perf.data"
}

run() { # broker test workload [--set ...]
  local dir="$out/$1/$2" wl=$3 b=$1
  shift 3
  mkdir -p "$dir"
  stop_broker
  start_broker "$b" "${broker_set[@]}"
  log "$b started (pid $broker_pid)"
  log "$(basename "$(dirname "$dir")") $(basename "$dir"): sluice bench run $wl --bootstrap $boot $*"
  local prof=
  case $(basename "$dir") in
    max-*|fixed-*) profile "$dir" $((warm_s + 8)) & prof=$! ;;
  esac
  "$sluice" bench run "$wl" --bootstrap "$boot" --out "$dir" "$@" >"$dir/bench.log" 2>&1
  [ -n "$prof" ] && wait "$prof"
  grep -E 'publish rate \(MB|consume rate \(MB|produced' "$dir/result.md" | tee -a "$out/run.log"
  stop_broker
}

rate_of() { # result.json -> msg/s
  python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["publishRateMsgS"]))' "$1"
}

if [ -n "${CEILINGS:-}" ] && [ -x "$CEILINGS" ]; then
  log "ceilings: $CEILINGS $data_parent/ceilings"
  "$CEILINGS" "$data_parent/ceilings" | tee "$out/ceilings.md"
fi

timing=(--set "warmupDurationSeconds=$warm_s" --set "testDurationSeconds=$test_s")
quarter=
broker_set=()
for b in sluice tansu; do
  [ "$b" = tansu ] && [ -z "$tansu" ] && continue
  run "$b" max-acks1 workloads/max-throughput-1k.toml "${timing[@]}" --set 'acks="1"'
  run "$b" max-acksall workloads/max-throughput-1k.toml "${timing[@]}" --set 'acks="all"'
  run "$b" max-produce-acks1 workloads/max-throughput-1k.toml "${timing[@]}" --set 'acks="1"' \
    --set subscriptionsPerTopic=0 --set producersPerTopic=4 --set batchSize=1048576 --set lingerMs=20
  if [ -z "$quarter" ]; then
    quarter=$(( $(rate_of "$out/$b/max-acksall/result.json") / 4 ))
    log "fixed rate: a quarter of $b's acks=all maximum = $quarter msg/s"
  fi
  run "$b" fixed-quarter workloads/fixed-rate-latency-1k.toml "${timing[@]}" \
    --set "producerRate=$quarter"
  run "$b" catch-up workloads/catch-up.toml --set "consumerBacklogSizeGB=$backlog" \
    --set testDurationSeconds=300
  if [ "$b" = sluice ]; then
    broker_set=(--set io_mode=buffered --set fetch.splice.enable=true)
    run sluice catch-up-buffered-splice workloads/catch-up.toml \
      --set "consumerBacklogSizeGB=$backlog" --set testDurationSeconds=300
    broker_set=()
  fi
done

# One side-by-side table per test: Sluice first, tansu (if run) against it.
: >"$out/summary.md"
for t in max-acks1 max-acksall max-produce-acks1 fixed-quarter catch-up catch-up-buffered-splice; do
  results=()
  for b in sluice tansu; do
    [ -f "$out/$b/$t/result.json" ] && results+=("$out/$b/$t")
  done
  [ ${#results[@]} -eq 0 ] && continue
  if [ ${#results[@]} -eq 1 ]; then
    { echo "### $t"; echo; cat "${results[0]}/result.md"; echo; } >>"$out/summary.md"
  else
    { echo "### $t"; echo; "$sluice" bench compare "${results[@]}"; echo; } >>"$out/summary.md"
  fi
done
log "done: $out/summary.md"
