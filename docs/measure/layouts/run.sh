#!/bin/bash
# run.sh — memory and Redis CPU of candidate layouts for pending tasks (issue 14).
# Usage: ./run.sh [path/to/redis-server]      (or REDIS_SERVER=...; default: redis-server on PATH)
#        env: PORT (default 23811; never 6379), SIZES (default "50000 500000"), REPEAT (fetch
#        runs per layout, default 5, interleaved), ROUNDS (index op rounds, default 5), SECTIONS (default "mem fifo fetch index complete"), REDIS_CLI
# Every measurement runs on a fresh private server (--save "" --appendonly no), which is shut down
# afterwards. Bytes per task = (INFO used_memory after - before) / N, plain INFO deltas (no
# MEMORY PURGE), read 1 s after the writes and a full Lua GC (Redis 8 counts the Lua heap in
# used_memory) by a fresh redis-cli connection; scripts are loaded before the first reading.
# The server runs with --latency-tracking no: otherwise each command's first call allocates a
# latency histogram (~24 KB) that lands in the deltas. Redis CPU = INFO commandstats usec_per_call of EVALSHA / tasks per
# call; also (INFO cpu used_cpu_user_main_thread + sys delta) / tasks, which includes reading
# the pipelined commands and the DEL of the active hash between fetches.
set -euo pipefail
cd "$(dirname "$0")"
SERVER=${1:-${REDIS_SERVER:-redis-server}}
CLI=${REDIS_CLI:-redis-cli}
PORT=${PORT:-23811}
SIZES=${SIZES:-"50000 500000"}
REPEAT=${REPEAT:-5}
ROUNDS=${ROUNDS:-5}
SECTIONS=${SECTIONS:-"mem fifo fetch index complete"}
R="$CLI -p $PORT"
PIDF=/tmp/rediq-layouts-$PORT.pid
TMP=$(mktemp -d /tmp/rediq-layouts.XXXXXX)
trap 'stop; rm -rf "$TMP"' EXIT

start() {
  if $R PING >/dev/null 2>&1; then echo "port $PORT is in use" >&2; exit 1; fi
  "$SERVER" --port "$PORT" --save '' --appendonly no --daemonize yes --pidfile "$PIDF" \
    --logfile "$TMP/server.log" --dir "$TMP" --latency-tracking no
  for _ in $(seq 1 50); do $R PING >/dev/null 2>&1 && break; sleep 0.1; done
  GEN=$($R SCRIPT LOAD "$(cat gen.lua)")
  FETCH=$($R SCRIPT LOAD "$(cat fetch.lua)")
  IXOPS=$($R SCRIPT LOAD "$(cat ixops.lua)")
  IXSCAN=$($R SCRIPT LOAD "$(cat ixscan.lua)")
  GC=$($R SCRIPT LOAD "collectgarbage('collect') return collectgarbage('count')")
  CWLIB=$({ cat cw_head.lua ../../../crates/rediq/src/broker/scripts/prelude.lua ../../../crates/rediq/src/broker/scripts/complete.lua cw_tail.lua; })
  $R FUNCTION LOAD REPLACE "$CWLIB" >/dev/null
  TODAY=$($R SCRIPT LOAD "$(cat ../../../crates/rediq/src/broker/scripts/prelude.lua ../../../crates/rediq/src/broker/scripts/fetch.lua)")
}
stop() {
  if [ -f "$PIDF" ]; then
    local pid; pid=$(cat "$PIDF")
    $R SHUTDOWN NOSAVE >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$PIDF"
  fi
}
# Redis 8 counts the Lua heap in used_memory: a full Lua GC comes first, at every reading.
mem() { $R EVALSHA "$GC" 0 >/dev/null; sleep 1; $R INFO memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r'; }
per() { echo "scale=1; ($2 - $1) / $3" | bc; }
cpu() { $R INFO cpu | awk -F: '/^used_cpu_(sys|user)_main_thread:/{s += $2} END {printf "%.6f", s}'; }
usec() { $R INFO commandstats | awk -F'[,=:]' -v c="cmdstat_$1" '$1 == c {print $7}' | tr -d '\r'; }
fill() { # what N k
  local i0=0 chunk=10000
  while [ $i0 -lt "$2" ]; do
    [ $((i0 + chunk)) -gt "$2" ] && chunk=$(($2 - i0))
    $R EVALSHA "$GEN" 0 "$1" $i0 $chunk "$3" >/dev/null
    i0=$((i0 + chunk))
  done
}
resp() { printf '*%d\r\n' $#; for a in "$@"; do printf '$%d\r\n%s\r\n' ${#a} "$a"; done; }
pipe() { # file -> checks no errors
  local o; o=$($R --pipe < "$1" 2>&1 | tail -1)
  case "$o" in *"errors: 0,"*) ;; *) echo "pipe failed: $o" >&2; exit 1;; esac
}
encodings() { local e=""; for k in "$@"; do e="$e $($R OBJECT ENCODING "$k")"; done; echo "${e# }"; }

# fetch_cost label N keys... : drains the pending keys with N/100 + 1 fetches of 100, DEL of the
# active hash after each; prints us per task (commandstats) and (INFO cpu) and checks the drain.
fetch_cost() {
  local label=$1 n=$2 layout=$3; shift 3
  local calls=$((n / 100 + 1)) block
  if [ "$layout" = today ]; then
    block=$(resp EVALSHA "$TODAY" 6 "$1" rediq:{q}:leases rediq:{q}:active:s1 rediq:{q}:token rediq:{q}:wake rediq:{q}:paused 100 30000 s1
            resp DEL rediq:{q}:active:s1; printf x)
  else
    block=$(resp EVALSHA "$FETCH" $((4 + $#)) rediq:{q}:leases rediq:{q}:active:s1 rediq:{q}:token rediq:{q}:paused "$@" "$layout" 100 30000 s1
            resp DEL rediq:{q}:active:s1; printf x)
  fi
  block=${block%x}
  for ((i = 0; i < calls; i++)); do printf '%s' "$block"; done > "$TMP/cmds"
  $R SET rediq:{q}:token 0 >/dev/null
  $R CONFIG RESETSTAT >/dev/null
  local c0; c0=$(cpu)
  pipe "$TMP/cmds"
  local c1; c1=$(cpu)
  local u; u=$(usec evalsha)
  local tok; tok=$($R GET rediq:{q}:token)
  local left=0 k
  for k in "$@"; do left=$((left + $($R EVAL "local t = redis.call('TYPE', KEYS[1])['ok'] if t == 'zset' then return redis.call('ZCARD', KEYS[1]) elseif t == 'list' then return redis.call('LLEN', KEYS[1]) elseif t == 'stream' then return redis.call('XLEN', KEYS[1]) end return 0" 1 "$k"))); done
  [ "$left" = 0 ] && [ "$tok" = $((n / 100)) ] || { echo "drain check failed: left $left tokens $tok" >&2; exit 1; }
  echo "$(echo "scale=3; $u / 100" | bc) $(echo "scale=3; ($c1 - $c0) * 1000000 / $n" | bc)"
}
stats() { # values... -> "min / median"
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f / %.2f", v[1], m}'
}

# ix_cost N B : ROUNDS rounds of noop, HSETNX, HGET, HDEL over N/10 ids not yet in the index
# (N/1000 calls of 100 ops each; HSETNX adds them, HGET finds them, HDEL removes them again).
# noop computes the bucket key and does no command. Prints us per op: min / median over rounds.
ix_cost() {
  local n=$1 B=$2 c calls=$(($1 / 1000)) r u op c0 c1
  $R EVALSHA "$GEN" 0 sample "$n" $((calls * 100)) 0 >/dev/null
  declare -A per=() pcpu=()
  for ((r = 0; r < ROUNDS; r++)); do
    for op in noop hsetnx hget hdel; do
      for ((c = 0; c < calls; c++)); do resp EVALSHA "$IXOPS" 1 "rediq:{q}:samp:$c" $op "$B"; done > "$TMP/cmds"
      $R CONFIG RESETSTAT >/dev/null
      c0=$(cpu)
      pipe "$TMP/cmds"
      c1=$(cpu)
      u=$(usec evalsha)
      per[$op]="${per[$op]:-} $(echo "scale=4; $u / 100" | bc)"
      pcpu[$op]="${pcpu[$op]:-} $(echo "scale=4; ($c1 - $c0) * 1000000 / ($calls * 100)" | bc)"
      [ $op = hsetnx ] && [ $r = 0 ] && scan=$($R EVALSHA "$IXSCAN" 0 "$B" | tr '\n' ' ')
    done
  done
  local line="| $n | $B | $((calls * 100)) | $ROUNDS |" med=()
  for op in noop hsetnx hget hdel; do
    # shellcheck disable=SC2086
    line="$line $(stats ${per[$op]}) ; cpu $(stats ${pcpu[$op]}) |"
    # shellcheck disable=SC2086
    med+=("$(stats ${per[$op]} | awk '{print $3}')")
  done
  echo "$line $(echo "scale=2; ${med[1]} - ${med[0]}" | bc) / $(echo "scale=2; ${med[2]} - ${med[0]}" | bc) / $(echo "scale=2; ${med[3]} - ${med[0]}" | bc) | $scan |"
}
want() { case " $SECTIONS " in *" $1 "*) return 0;; esac; return 1; }

echo "# $("$SERVER" --version)"
echo "# $(date -u '+%F %T') UTC; load: $(cut -d' ' -f1-3 /proc/loadavg)"
start; echo "# mem_allocator: $($R INFO memory | awk -F: '/^mem_allocator:/{print $2}' | tr -d '\r'); hash-max-listpack-entries $($R CONFIG GET hash-max-listpack-entries | tail -1), list-max-listpack-size $($R CONFIG GET list-max-listpack-size | tail -1), stream-node-max-entries $($R CONFIG GET stream-node-max-entries | tail -1)"
$R EVALSHA "$GEN" 0 zset 0 1 1 >/dev/null
echo "# record: $($R EVAL "local r = redis.call('ZRANGE', KEYS[1], 0, 0)[1]; return #r .. ' bytes: ' .. (r:gsub('.', function(c) return string.format('%02x', c:byte()) end))" 1 rediq:{q}:p)"
stop

if want mem; then
echo
echo "## Memory: pending layout alone, then + id index (same ids), bytes per task"
echo "| layout | N | encoding | layout B/task | index B | index B/entry | layout + index B/task | bucket encodings (4 sampled) | buckets, entries, smallest, largest, over 128, over 512 |"
echo "|---|---|---|---|---|---|---|---|---|"
layout_mem() { # label what k keys-for-encoding N B
  local label=$1 what=$2 k=$3 keys=$4 n=$5 B=$6
  start
  local m0 m1 m2; m0=$(mem); fill "$what" "$n" "$k"; m1=$(mem)
  fill index "$n" "$B"; m2=$(mem)
  local scan; scan=$($R EVALSHA "$IXSCAN" 0 "$B" | tr '\n' ' ')
  # shellcheck disable=SC2086
  printf '| %s | %d | %s | %s | %d | %s | %s | %s | %s |\n' "$label" "$n" "$(encodings $keys)" "$(per $m0 $m1 $n)" \
    "$B" "$(per $m1 $m2 $n)" "$(per $m0 $m2 $n)" \
    "$(encodings rediq:{q}:ix:0 rediq:{q}:ix:1 "rediq:{q}:ix:$((B / 2))" "rediq:{q}:ix:$((B - 1))")" "$scan"
  stop
}
for n in $SIZES; do
  for div in 40 80; do
    B=$(( (n + div - 1) / div ))
    layout_mem "zset (today)" zset 1 "rediq:{q}:p" "$n" $B
    layout_mem "list, 1 band" list 1 "rediq:{q}:p:0" "$n" $B
    layout_mem "list, 3 bands" list 3 "rediq:{q}:p:0 rediq:{q}:p:1 rediq:{q}:p:2" "$n" $B
    layout_mem "stream *, 1 band" stream_auto 1 "rediq:{q}:s:0" "$n" $B
    layout_mem "stream ms-seq, 1 band" stream_ms 1 "rediq:{q}:s:0" "$n" $B
    layout_mem "stream *, 3 bands" stream_auto 3 "rediq:{q}:s:0 rediq:{q}:s:1 rediq:{q}:s:2" "$n" $B
  done
done

fi
if want fifo; then
echo
echo "## Memory: recently-finished FIFO list of 22-byte entries (16-byte id + 6-byte ms)"
echo "| N | encoding | B/entry |"
echo "|---|---|---|"
for n in $SIZES; do
  start; m0=$(mem); fill fifo "$n" 1; m1=$(mem)
  echo "| $n | $(encodings rediq:{q}:fin) | $(per "$m0" "$m1" "$n") |"
  stop
done

fi
if want fetch; then
echo
echo "## Redis CPU of a fetch of 100 (drain of N pending tasks; active hash DEL'd between fetches)"
echo "| layout, pop | N | runs | us/task, commandstats EVALSHA usec_per_call / 100: min / median | us/task, INFO cpu main thread / N: min / median |"
echo "|---|---|---|---|---|"
FETCHES=(
  "zset, shipped prelude+fetch.lua|zset 1|today rediq:{q}:p"
  "zset, ZRANGE+ZREMRANGEBYRANK|zset 1|zset rediq:{q}:p"
  "list 1 band, LPOP n|list 1|list rediq:{q}:p:0"
  "list 1 band, LRANGE+LTRIM|list 1|list_rt rediq:{q}:p:0"
  "list 3 bands, LPOP n|list 3|list rediq:{q}:p:0 rediq:{q}:p:1 rediq:{q}:p:2"
  "stream * 1 band, XRANGE+XDEL|stream_auto 1|stream_del rediq:{q}:s:0"
  "stream * 1 band, XRANGE+XTRIM MINID|stream_auto 1|stream_trim rediq:{q}:s:0"
  "stream ms-seq 1 band, XRANGE+XTRIM MINID|stream_ms 1|stream_trim rediq:{q}:s:0"
  "stream * 3 bands, XRANGE+XTRIM MINID|stream_auto 3|stream_trim rediq:{q}:s:0 rediq:{q}:s:1 rediq:{q}:s:2"
)
for n in $SIZES; do
  declare -A CS=() CPU=()
  for ((rep = 0; rep < REPEAT; rep++)); do
    for f in "${FETCHES[@]}"; do
      IFS='|' read -r label filler args <<< "$f"
      start
      # shellcheck disable=SC2086
      fill ${filler%% *} "$n" ${filler##* }
      # shellcheck disable=SC2086
      read -r a b <<< "$(fetch_cost "$label" "$n" $args)"
      [ -n "$b" ] || exit 1
      CS[$label]="${CS[$label]:-} $a"; CPU[$label]="${CPU[$label]:-} $b"
      stop
    done
  done
  for f in "${FETCHES[@]}"; do
    label=${f%%|*}
    # shellcheck disable=SC2086
    echo "| $label | $n | $REPEAT | $(stats ${CS[$label]}) | $(stats ${CPU[$label]}) |"
  done
done

fi
if want index; then
echo
echo "## Redis CPU of id-index operations, 100 per EVALSHA (commandstats EVALSHA usec_per_call / 100), us per op: min / median over rounds; then "cpu" = INFO cpu main thread delta / ops, min / median"
echo "| N in index | B | ids added + removed per round | rounds | noop (bucket key only) | HSETNX | HGET | HDEL | medians net of noop: HSETNX / HGET / HDEL | buckets, entries, smallest, largest, over 128, over 512 (after the first HSETNX round) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in $SIZES; do
  for div in 40 80; do
    B=$(( (n + div - 1) / div ))
    start; fill index "$n" $B; ix_cost "$n" $B; stop
  done
done
fi
if want complete; then
echo
echo "## Redis CPU of fetch (list, LPOP 100) followed by the shipped complete.lua of the same 100 tasks (FCALL cw, see cw_head.lua), us per task: min / median"
echo "| N | runs | mode | fetch (EVALSHA usec_per_call / 100) | FCALL cw (usec_per_call / 100) |"
echo "|---|---|---|---|---|"
for n in $SIZES; do
  B=$(( (n + 39) / 40 ))
  declare -A FE=() CW=()
  for ((rep = 0; rep < REPEAT; rep++)); do
    for mode in build full ix; do
      start; fill list "$n" 1; fill index "$n" $B
      block=$(resp EVALSHA "$FETCH" 5 rediq:{q}:leases rediq:{q}:active:s1 rediq:{q}:token rediq:{q}:paused rediq:{q}:p:0 list 100 30000 s1
              resp FCALL cw 9 rediq:{q}:active:s1 rediq:{q}:completed rediq:{q}:processed rediq:{q}:recidx rediq:{q}:reccount rediq:{q}:deps rediq:{q}:outbox rediq:{q}:rec:1 rediq:{q}:receipt:s1 $mode $B
              [ $mode = build ] && resp DEL rediq:{q}:active:s1; printf x)
      block=${block%x}
      for ((i = 0; i < n / 100; i++)); do printf '%s' "$block"; done > "$TMP/cmds"
      $R CONFIG RESETSTAT >/dev/null
      pipe "$TMP/cmds"
      FE[$mode]="${FE[$mode]:-} $(echo "scale=4; $(usec evalsha) / 100" | bc)"
      CW[$mode]="${CW[$mode]:-} $(echo "scale=4; $(usec fcall) / 100" | bc)"
      if [ $mode != build ]; then
        got=$($R GET rediq:{q}:processed); act=$($R EXISTS rediq:{q}:active:s1)
        [ "$got" = "$n" ] && [ "$act" = 0 ] || { echo "complete check failed: processed $got active $act" >&2; exit 1; }
      fi
      if [ $mode = ix ]; then
        left=$($R EVALSHA "$IXSCAN" 0 "$B" | sed -n 2p)
        [ "$left" = 0 ] || { echo "index not emptied: $left" >&2; exit 1; }
      fi
      stop
    done
  done
  for mode in build full ix; do
    # shellcheck disable=SC2086
    echo "| $n | $REPEAT | $mode | $(stats ${FE[$mode]}) | $(stats ${CW[$mode]}) |"
  done
done
fi
