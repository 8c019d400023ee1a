// BullMQ's worker and producer for the peer benchmark, each run as its own Node process.
//
// - worker, "best": a Worker with concurrency 50; "defaults": concurrency 1. The processor
//   is a no-op; completions are counted from the worker's local "completed" event (emitted
//   after the job is moved to completed in Redis), never with a Redis call of our own.
// - producer, "best": queue.addBulk of 1,000 jobs at a time; "defaults": queue.add per job.
// Job options are BullMQ's defaults (completed jobs are kept, as BullMQ does by default).
//
//   BULLMQ_DIR=<folder with node_modules> node bullmq_side.mjs worker URL QUEUE SETTINGS EXPECT WARM
//   BULLMQ_DIR=... node bullmq_side.mjs producer URL QUEUE SETTINGS EVENTS_FILE FIRST COUNT
// Output: one JSON object a line on stdout, as the Python sides (bench/peers/tally.py).

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.BULLMQ_DIR, "package.json"));
const { Queue, Worker } = require("bullmq");

const PUBLISH_BATCH = 1000;
const now = () => (performance.timeOrigin + performance.now()) / 1000; // s, wall clock
const report = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));

async function worker(url, queue, settings, expect, warm) {
  const connection = { url }; // BullMQ builds its ioredis client from it
  const concurrency = settings === "best" ? 50 : 1;
  const w = new Worker(queue, async () => {}, { connection, concurrency, autorun: false });
  await w.waitUntilReady();
  let count = 0;
  let first = 0;
  let started = 0;
  const done = new Promise((resolve) => {
    w.on("completed", () => {
      count += 1;
      if (count === warm) report("warm", { count });
      if (!first && count > warm) first = now();
      if (count === warm + expect) resolve(now());
    });
  });
  w.on("failed", (job, error) => console.error(`job ${job?.id} failed: ${error}`));
  report("ready");
  started = now();
  const running = w.run();
  const last = await done;
  report("done", { start: started, first, last, count });
  await w.close();
  await running;
}

async function producer(url, queue, settings, file, firstIndex, count) {
  const connection = { url };
  const q = new Queue(queue, { connection });
  await q.waitUntilReady();
  const bodies = readFileSync(file, "utf8")
    .split("\n")
    .slice(firstIndex, firstIndex + count)
    .map((line) => JSON.parse(line));
  const started = now();
  if (settings === "best") {
    for (let at = 0; at < bodies.length; at += PUBLISH_BATCH) {
      await q.addBulk(bodies.slice(at, at + PUBLISH_BATCH).map((data) => ({ name: "event", data })));
    }
  } else {
    for (const data of bodies) await q.add("event", data);
  }
  report("done", { start: started, end: now(), count: bodies.length });
  await q.close();
}

const [role, url, queue, settings, ...rest] = process.argv.slice(2);
if (role === "worker") {
  await worker(url, queue, settings, Number(rest[0]), Number(rest[1]));
} else if (role === "producer") {
  await producer(url, queue, settings, rest[0], Number(rest[1]), Number(rest[2]));
} else {
  console.error("usage: worker URL QUEUE SETTINGS EXPECT WARM | producer URL QUEUE SETTINGS FILE FIRST COUNT");
  process.exit(2);
}
