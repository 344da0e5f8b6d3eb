#!/usr/bin/env bash
# Rediq beside its peers, measured in the same window on this machine (speed drifts 2-3x between
# days on a shared box: only ratios from one window mean anything). Runs ROUNDS (default 3)
# interleaved rounds of: the peers (bench/peers/run.sh: bee-queue, BullMQ), then Rediq's
# benchmark (crates/rediq/examples/benchmark.rs, release build), each on a fresh private
# redis-server; then prints the medians and Rediq's ratio to each peer.
#
#   bench/compare.sh                 ROUNDS=3 N=50000 C=50
#   ROUNDS=1 N=20000 bench/compare.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export N="${N:-50000}" C="${C:-50}"
rounds="${ROUNDS:-3}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd "$root" && cargo build -q --release --example benchmark)
bench="${CARGO_TARGET_DIR:-$root/target}/release/examples/benchmark"
echo "machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(redis-server --version | cut -d' ' -f1-3)"
echo "commit: $(git -C "$root" rev-parse --short HEAD); tasks $N, concurrency $C, $rounds round(s); started $(date -u '+%Y-%m-%d %H:%M UTC')"
for r in $(seq "$rounds"); do
  echo "round $r: peers" >&2
  "$root/bench/peers/run.sh" | tee -a "$out/peers" >&2
  echo "round $r: rediq" >&2
  "$bench" --tasks "$N" --concurrency "$C" 2>/dev/null | tee -a "$out/rediq" >&2
done

# The figure of each round, in the order the rounds ran: `values FILE PATTERN FIELD`.
values() { grep -E "$2" "$out/$1" | awk -v f="$3" '{ for (i = 2; i <= NF; i++) if ($i == f && $(i - 1) ~ /^[0-9.]+$/) { print $(i - 1); break } }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'; }
row() { # name, rediq value, peer name, peer value, higher-is-better (1) or lower (0)
  local ratio
  ratio=$(awk -v a="$2" -v b="$4" -v up="$5" 'BEGIN { if (b == "" || b == 0 || a == "") print "-"; else printf "%.2fx", (up ? a / b : b / a) }')
  printf '| %s | %s | %s %s | %s |\n' "$1" "$2" "$3" "$4" "$ratio"
}
r_single=$(values rediq '^single: +enqueue' jobs/s | median)
r_batch=$(values rediq '^batch: +enqueue_batch x1000, 1 caller' jobs/s | median)
r_proc=$(values rediq '^process: no-op handler' jobs/s | median)
r_p50=$(grep -E '^latency:' "$out/rediq" | sed -E 's/.*p50 ([0-9.]+) ms.*/\1/' | median)
r_p99=$(grep -E '^latency:' "$out/rediq" | sed -E 's/.*p99 ([0-9.]+) ms.*/\1/' | median)
r_mem=$(values rediq '^memory: +redis bytes per pending task' bytes | median)
b_single=$(values peers '^bullmq enqueue' jobs/s | median)
b_bulk=$(values peers '^bullmq bulk' jobs/s | median)
b_proc=$(values peers '^bullmq process' jobs/s | median)
b_p50=$(grep -E '^bullmq latency' "$out/peers" | sed -E 's/.*p50 ([0-9.]+) ms.*/\1/' | median)
b_p99=$(grep -E '^bullmq latency' "$out/peers" | sed -E 's/.*p99 ([0-9.]+) ms.*/\1/' | median)
b_mem=$(values peers '^bullmq memory' bytes | median)
q_single=$(values peers '^bee-queue enqueue' jobs/s | median)
q_bulk=$(values peers '^bee-queue bulk' jobs/s | median)
q_proc=$(values peers '^bee-queue process' jobs/s | median)
echo
echo "| figure (median of $rounds) | Rediq | peer | Rediq's ratio (>1: Rediq better) |"
echo "|---|---:|---:|---:|"
row "processing, C=$C (jobs/s)" "$r_proc" "bee-queue" "$q_proc" 1
row "processing, C=$C (jobs/s)" "$r_proc" "BullMQ" "$b_proc" 1
row "enqueue, 100 producers (jobs/s)" "$r_single" "bee-queue" "$q_single" 1
row "enqueue, 100 producers (jobs/s)" "$r_single" "BullMQ" "$b_single" 1
row "bulk enqueue by 1,000 (jobs/s)" "$r_batch" "bee-queue" "$q_bulk" 1
row "bulk enqueue by 1,000 (jobs/s)" "$r_batch" "BullMQ" "$b_bulk" 1
row "pickup p50 at 2,000/s (ms)" "$r_p50" "BullMQ" "$b_p50" 0
row "pickup p99 at 2,000/s (ms)" "$r_p99" "BullMQ" "$b_p99" 0
row "Redis bytes per pending task" "$r_mem" "BullMQ" "$b_mem" 0
