// bee-queue, measured like bullmq.mjs: enqueue from 100 producers, processing at concurrency
// C with a no-op handler, bulk enqueue by 1,000 (saveAll).
import Queue from 'bee-queue';

const N = +(process.env.N || 50000);
const C = +(process.env.C || 50);
const redis = { host: '127.0.0.1', port: +process.env.REDIS_PORT };
const quiet = { redis, removeOnSuccess: true, removeOnFailure: true, getEvents: false, sendEvents: false };
const rate = (n, ms) => Math.round(n / (ms / 1000));

const producer = new Queue('bench', { ...quiet, isWorker: false });
await producer.ready();
await producer.destroy().catch(() => {});

let next = 0;
let t = performance.now();
await Promise.all(Array.from({ length: 100 }, async () => {
  while (next < N) { const i = next++; await producer.createJob({ i }).save(); }
}));
console.log(`bee-queue enqueue: ${rate(N, performance.now() - t)} jobs/s`);

const worker = new Queue('bench', { ...quiet, isWorker: true, activateDelayedJobs: false });
await worker.ready();
t = performance.now();
await new Promise((done) => {
  let seen = 0;
  worker.process(C, async () => { if (++seen === N) done(); });
});
console.log(`bee-queue process: ${rate(N, performance.now() - t)} jobs/s`);
await worker.close();

t = performance.now();
for (let s = 0; s < N; s += 1000) {
  const n = Math.min(1000, N - s);
  await producer.saveAll(Array.from({ length: n }, (_, j) => producer.createJob({ i: s + j })));
}
console.log(`bee-queue bulk: ${rate(N, performance.now() - t)} jobs/s`);
await producer.destroy().catch(() => {});
process.exit(0);
