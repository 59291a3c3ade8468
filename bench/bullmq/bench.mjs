// BullMQ baseline for `make bench` (bench/throughput.py drives it).
//
//   node bench.mjs enqueue REDIS_URL QUEUE N   adds N no-op jobs in bulk, then exits
//   node bench.mjs work REDIS_URL QUEUE CONCURRENCY   runs a no-op Worker until SIGTERM
//
// The harness times the run itself, by polling the queue's `completed` set in Redis, exactly
// as it polls arq's and SAQ's queues, so every system is measured the same way.
import { Queue, Worker } from "bullmq";

const [mode, redisUrl, queueName, countArg] = process.argv.slice(2);
const url = new URL(redisUrl);
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number(url.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const BULK = 1000;

if (mode === "enqueue") {
  const total = Number(countArg);
  const queue = new Queue(queueName, { connection });
  for (let start = 0; start < total; start += BULK) {
    const size = Math.min(BULK, total - start);
    await queue.addBulk(
      Array.from({ length: size }, (_, i) => ({ name: "noop", data: { n: start + i } })),
    );
  }
  await queue.close();
} else if (mode === "work") {
  const worker = new Worker(queueName, async () => null, {
    connection,
    concurrency: Number(countArg),
  });
  await worker.waitUntilReady();
  console.log("ready");
  const stop = async () => {
    await worker.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
} else {
  console.error("usage: node bench.mjs enqueue|work REDIS_URL QUEUE N|CONCURRENCY");
  process.exit(2);
}
