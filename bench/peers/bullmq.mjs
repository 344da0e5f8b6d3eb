// BullMQ, measured the way Rediq's benchmark measures itself (crates/rediq/examples/benchmark.rs):
// enqueue from 100 concurrent producers, processing with a no-op handler at concurrency C,
// bulk enqueue by 1,000, pickup latency at a steady 2,000 jobs/s, and Redis bytes per pending
// job. Prints one line per figure, in the same words as the comparison script reads them.
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const N = +(process.env.N || 50000);
const C = +(process.env.C || 50);
const port = +process.env.REDIS_PORT;
const connect = () => new IORedis({ host: '127.0.0.1', port, maxRetriesPerRequest: null });
const rate = (n, ms) => Math.round(n / (ms / 1000));
const usedMemory = async (c) => +(await c.info('memory')).match(/used_memory:(\d+)/)[1];

const admin = connect();
const queue = new Queue('bench', { connection: connect() });
const fresh = () => queue.obliterate({ force: true }).catch(() => {});

// Enqueue, 100 producers, and the memory the pending jobs take.
await fresh();
const before = await usedMemory(admin);
let next = 0;
let t = performance.now();
await Promise.all(Array.from({ length: 100 }, async () => {
  while (next < N) {
    const i = next++;
    await queue.add('noop', { i }, { removeOnComplete: true, removeOnFail: true });
  }
}));
console.log(`bullmq enqueue: ${rate(N, performance.now() - t)} jobs/s`);
console.log(`bullmq memory: ${((await usedMemory(admin) - before) / N).toFixed(1)} bytes per pending job`);

// Processing the N pending jobs.
t = performance.now();
await new Promise((done) => {
  let seen = 0;
  const w = new Worker('bench', async () => {}, { connection: connect(), concurrency: C });
  w.on('completed', () => { if (++seen === N) { w.close(); done(); } });
});
console.log(`bullmq process: ${rate(N, performance.now() - t)} jobs/s`);

// Bulk enqueue by 1,000.
await fresh();
t = performance.now();
for (let s = 0; s < N; s += 1000) {
  const n = Math.min(1000, N - s);
  await queue.addBulk(Array.from({ length: n }, (_, j) => ({ name: 'noop', data: { i: s + j }, opts: { removeOnComplete: true } })));
}
console.log(`bullmq bulk: ${rate(N, performance.now() - t)} jobs/s`);

// Pickup latency: 2,000 jobs/s for 5 s, from add() to the handler's start.
await fresh();
const lat = [];
const now = () => performance.timeOrigin + performance.now();
const w = new Worker('bench', async (job) => { lat.push(now() - job.data.t); }, { connection: connect(), concurrency: C });
await new Promise((r) => setTimeout(r, 500));
const total = 10000;
let sent = 0;
const start = performance.now();
await new Promise((done) => {
  const tick = setInterval(() => {
    const due = Math.min(total, Math.floor((performance.now() - start) * 2));
    while (sent < due) { queue.add('x', { t: now() }, { removeOnComplete: true }); sent++; }
    if (sent >= total) { clearInterval(tick); done(); }
  }, 1);
});
while (lat.length < total) await new Promise((r) => setTimeout(r, 50));
await w.close();
lat.sort((a, b) => a - b);
const q = (x) => lat[Math.min(lat.length - 1, Math.floor(lat.length * x))].toFixed(3);
console.log(`bullmq latency: p50 ${q(0.5)} ms, p99 ${q(0.99)} ms`);
await fresh();
process.exit(0);
