#!/bin/bash
# Private redis-server on $PORT (default 23791; never 6379), no persistence; shut down at the end.
set -e
cd "$(dirname "$0")"
PORT=${PORT:-23791}
redis-server --port $PORT --save '' --appendonly no --daemonize yes --pidfile /tmp/rediq-id-lookup.pid --logfile /tmp/rediq-id-lookup.log
sleep 0.5
R="redis-cli -p $PORT"
GEN=$($R SCRIPT LOAD "$(cat gen.lua)")
LOOK=$($R SCRIPT LOAD "$(cat look.lua)")
mem() { $R INFO memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r'; }
hexid() { $R EVAL "local r = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[1])[1]; return (string.sub(r,3,18):gsub('.', function(c) return string.format('%02x', c:byte()) end))" 1 p $1; }
timed() {
  $R CONFIG RESETSTAT >/dev/null
  for i in $(seq 1 $3); do $R EVALSHA $LOOK 2 p ix $1 $2 >/dev/null; done
  $R INFO commandstats | awk -F'[,=]' '/cmdstat_evalsha/{print $6}'
}
$R FLUSHALL >/dev/null; m0=$(mem); $R EVALSHA $GEN 1 p 100000 ms 1000 1 >/dev/null; m1=$(mem)
echo "pending zset, score prio*2^42 + creation ms of the id: $(echo "scale=1; ($m1 - $m0)/100000" | bc) B/task"
N=500000
for rate in 1000 100000; do
  $R FLUSHALL >/dev/null; $R EVALSHA $GEN 1 p $N ms $rate 2 >/dev/null
  mid=$(hexid 250000); missing=00000000000000000000000000000000
  echo "ms-score, ids at $rate/s, 1 band: noop $(timed noop $mid 300) us; present $(timed ms $mid 300) us; missing $(timed ms $missing 300) us"
done
$R EVAL "local r = redis.call('ZRANGE', KEYS[1], 0, 199999); for i = 1, #r do local p = (i % 2 == 0) and 0 or 100; local ms = 0; for b = 3, 8 do ms = ms * 256 + string.byte(r[i], b) end; redis.call('ZREM', KEYS[1], r[i]); redis.call('ZADD', KEYS[1], string.format('%d', p * 4398046511104 + ms), '\1' .. string.char(p) .. string.sub(r[i], 3)) end return #r" 1 p >/dev/null
mid=$(hexid 400000)
echo "ms-score, 3 bands: noop $(timed noop $mid 300) us; present (last band) $(timed ms $mid 300) us; missing $(timed ms $missing 300) us"
$R SHUTDOWN NOSAVE || true
