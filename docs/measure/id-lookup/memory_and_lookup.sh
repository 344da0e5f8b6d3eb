#!/bin/bash
# Private redis-server on $PORT (default 23791; never 6379), no persistence; shut down at the end.
# Measures bytes per task and lookup cost of the id-lookup candidates (issue 13 defect 10).
set -e
cd "$(dirname "$0")"
PORT=${PORT:-23791}
redis-server --port $PORT --save '' --appendonly no --daemonize yes --pidfile /tmp/rediq-id-lookup.pid --logfile /tmp/rediq-id-lookup.log
sleep 0.5
R="redis-cli -p $PORT"
GEN=$($R SCRIPT LOAD "$(cat gen.lua)")
IDX=$($R SCRIPT LOAD "$(cat idx.lua)")
LOOK=$($R SCRIPT LOAD "$(cat look.lua)")
mem() { $R INFO memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r'; }
hexid() { $R EVAL "local r = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[1])[1]; return (string.sub(r,3,18):gsub('.', function(c) return string.format('%02x', c:byte()) end))" 1 p $1; }
per() { echo "scale=1; ($2 - $1) / $3" | bc; }
timed() { # method id-hex repeats -> usec per call
  $R CONFIG RESETSTAT >/dev/null
  for i in $(seq 1 $3); do $R EVALSHA $LOOK 2 p ix $1 $2 >/dev/null; done
  $R INFO commandstats | awk -F'[,=]' '/cmdstat_evalsha/{print $6}'
}
N=100000
echo "== bytes per pending task, $N tasks, 60-byte records"
for layout in seq band; do
  $R FLUSHALL >/dev/null; m0=$(mem); $R EVALSHA $GEN 1 p $N $layout 1000 1 >/dev/null; m1=$(mem)
  echo "pending zset, score layout $layout: $(per $m0 $m1 $N) B/task"
done
$R FLUSHALL >/dev/null; $R EVALSHA $GEN 1 p $N seq 1000 1 >/dev/null; m1=$(mem)
$R EVALSHA $IDX 2 p ix hash >/dev/null; m2=$(mem)
echo "index hash id->1 byte: $(per $m1 $m2 $N) B/task extra"
for rate in 1 10 100 1000 10000 100000; do
  for kind in slots seconds; do
    $R FLUSHALL >/dev/null; $R EVALSHA $GEN 1 p $N seq $rate 1 >/dev/null; m1=$(mem)
    $R EVALSHA $IDX 2 p ix $kind >/dev/null; m2=$(mem)
    echo "index $kind, ids created at $rate/s: $(per $m1 $m2 $N) B/task extra"
  done
done
N=500000
echo "== lookup of one id among $N pending (usec of Redis CPU per lookup, commandstats)"
$R FLUSHALL >/dev/null; $R EVALSHA $GEN 1 p $N seq 1000 2 >/dev/null
mid=$(hexid 250000); missing=00000000000000000000000000000000
echo "zscan (today), present mid-set: $(timed zscan $mid 5) us; missing: $(timed zscan $missing 5) us"
$R EVALSHA $IDX 2 p ix hash >/dev/null
echo "index hash HEXISTS: $(timed hash $mid 200) us"
for rate in 1000 100000; do
  $R FLUSHALL >/dev/null; $R EVALSHA $GEN 1 p $N seq $rate 2 >/dev/null
  mid=$(hexid 250000)
  $R EVALSHA $IDX 2 p ix slots >/dev/null; $R EVALSHA $IDX 2 p ix seconds >/dev/null
  echo "ids at $rate/s: slots (10 ms) $(timed slots $mid 200) us; seconds $(timed seconds $mid 200) us"
done
$R FLUSHALL >/dev/null; $R EVALSHA $GEN 1 p $N band 1000 2 >/dev/null
mid=$(hexid 250000)
echo "band layout, ZRANGEBYLEX, 1 band: present $(timed lex $mid 200) us; missing $(timed lex $missing 200) us"
# three bands: re-add a third of the tasks at other priorities
$R EVAL "local r = redis.call('ZRANGE', KEYS[1], 0, 199999); for i = 1, #r do local p = (i % 2 == 0) and 0 or 100; redis.call('ZREM', KEYS[1], r[i]); redis.call('ZADD', KEYS[1], string.format('%d', p * 4398046511104), '\1' .. string.char(p) .. string.sub(r[i], 3)) end return #r" 1 p >/dev/null
mid=$(hexid 400000)
echo "band layout, 3 bands: present (last band) $(timed lex $mid 200) us; missing $(timed lex $missing 200) us"
rec=$($R ZRANGE p 400000 400000 | head -c 0; echo)
$R CONFIG RESETSTAT >/dev/null
for i in $(seq 1 200); do $R EVAL "local r = redis.call('ZRANGE', KEYS[1], 400000, 400000)[1]; return redis.call('ZSCORE', KEYS[1], r)" 1 p >/dev/null; done
echo "exact-record ZSCORE (plus the ZRANGE that fetches the record): $($R INFO commandstats | awk -F'[,=]' '/cmdstat_eval:/{print $6}') us"
$R INFO server | grep -E "redis_version|os:|arch" | tr -d '\r'
$R SHUTDOWN NOSAVE || true
