#!/bin/bash
# Private redis-server on $PORT (default 23791; never 6379), no persistence; shut down at the end.
set -e
cd "$(dirname "$0")"
PORT=${PORT:-23791}
redis-server --port $PORT --save '' --appendonly no --daemonize yes --pidfile /tmp/rediq-id-lookup.pid --logfile /tmp/rediq-id-lookup.log
sleep 0.5
R="redis-cli -p $PORT"
GEN=$($R SCRIPT LOAD "$(cat gen.lua)")
IDX=$($R SCRIPT LOAD "$(cat idx.lua)")
LOOK=$($R SCRIPT LOAD "$(cat look.lua)")
hexid() { $R EVAL "local r = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[1])[1]; return (string.sub(r,3,18):gsub('.', function(c) return string.format('%02x', c:byte()) end))" 1 p $1; }
timed() {
  $R CONFIG RESETSTAT >/dev/null
  for i in $(seq 1 $3); do $R EVALSHA $LOOK 2 p ix $1 $2 >/dev/null; done
  $R INFO commandstats | awk -F'[,=]' '/cmdstat_evalsha/{print $6}'
}
N=500000
for rate in 1000 100000; do
  $R FLUSHALL >/dev/null; $R EVALSHA $GEN 1 p $N seq $rate 2 >/dev/null
  mid=$(hexid 250000)
  $R EVALSHA $IDX 2 p ix slots >/dev/null; $R EVALSHA $IDX 2 p ix seconds >/dev/null
  $R EVALSHA $IDX 2 p ix hash >/dev/null
  echo "ids at $rate/s: noop script $(timed noop $mid 300) us; HEXISTS $(timed hash $mid 300) us; slots (10 ms) $(timed slots $mid 300) us; seconds $(timed seconds $mid 300) us"
done
$R FLUSHALL >/dev/null; $R EVALSHA $GEN 1 p $N band 1000 2 >/dev/null
mid=$(hexid 250000); missing=00000000000000000000000000000000
echo "band layout, 1 band: noop $(timed noop $mid 300) us; ZRANGEBYLEX present $(timed lex $mid 300) us; missing $(timed lex $missing 300) us"
$R SHUTDOWN NOSAVE || true
