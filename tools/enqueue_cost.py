#!/usr/bin/env python3
"""What one enqueue.lua call costs Redis, with and without its id-index writes.

    pip install redis
    python3 tools/enqueue_cost.py [redis-server binary] [tasks per call] [calls]

Starts a private redis-server on a free port, loads scripts/enqueue.lua as the broker does
(prelude.lua, bands.lua, index.lua, enqueue.lua), sends `calls` calls of `tasks per call` new
tasks each (random 16-byte ids, a ~60-byte record like the benchmark's), and prints Redis's own
time per call and per task (`INFO commandstats`, so neither the network nor this client counts).
It then does the same with the index writes cut out (ix_add_all replaced by "every id is new"),
which shows what the id index costs an enqueue. The bucket keys are not the ones the broker
would compute, so the buckets do not split as in real use: the figures compare the two
variants, they do not replace the benchmark program.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, '..', 'crates', 'rediq', 'src', 'broker', 'scripts')


def body(no_index):
    text = ''.join(open(os.path.join(SCRIPTS, p)).read()
                   for p in ['prelude.lua', 'bands.lua', 'index.lua', 'enqueue.lua'])
    if no_index:
        cut = "local added = ix_add_all(ix, add_at, add, 'L')"
        assert cut in text, 'enqueue.lua changed: update this tool'
        text = text.replace(cut, "local added = {} for j = 1, #add do added[j] = true end ix.dn = #add")
    return text


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def measure(r, sha, per_call, calls):
    q = 'rediq:{b}:'
    r.flushall()
    r.config_resetstat()
    pipe = r.pipeline(transaction=False)
    for i in range(calls):
        recs = [b'\x01\x32' + os.urandom(16) + b'\x82\xa1t\xa5bench\xa1p\xc4!{"n":604,"t":1796578627447599884}'
                for _ in range(per_call)]
        keys = [q + 'delayed', q + 'wake', q + 'stat:enqueued', q + 'bands', q + 'pending:50', q + 'ix', q + 'ix:0:done']
        for t in range(per_call):
            b = (i + t) % 64
            keys += [q + 'ix:0:%d' % b, q + 'ix:0:%d' % (b + 64)]
        window = 8 + per_call // 8
        for j in range(window):
            keys += [q + 'ix:0:%d' % j, q + 'ix:0:%d' % (j + 64)]
        args = ['each', str(per_call)] + recs + ['0', '1', 'bench', str(per_call), '', '50',
                                                 '6|0|%d|%d|0' % (per_call, window)]
        pipe.evalsha(sha, len(keys), *keys, *args)
        if i % 100 == 99:
            pipe.execute()
    pipe.execute()
    return r.info('commandstats')['cmdstat_evalsha']['usec_per_call']


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else 'redis-server'
    per_call = int(sys.argv[2]) if len(sys.argv) > 2 else 33
    calls = int(sys.argv[3]) if len(sys.argv) > 3 else max(200, 40000 // per_call)
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen([binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '',
                                   '--appendonly', 'no', '--dir', d], stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port)
            for _ in range(50):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            for label, no_index in [('enqueue.lua', False), ('without index writes', True)]:
                sha = r.script_load(body(no_index))
                us = measure(r, sha, per_call, calls)
                print(f'{label:22} {per_call} tasks/call: {us:8.2f} us/call {us / per_call:6.2f} us/task')
        finally:
            server.terminate()
            server.wait()


if __name__ == '__main__':
    main()
