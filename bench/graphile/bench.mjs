#!/usr/bin/env node
// Peer benchmark: graphile-worker throughput (enqueue -> completion over many
// named queues) and pickup latency (addJob -> handler start on an idle worker).
//
// Benchmark script only; not a dependency of the product. See README.md.
//
// Human-readable progress goes to stderr; one JSON object goes to stdout.

import { EventEmitter } from "node:events";
import { readFileSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import { parseArgs } from "node:util";

// graphile-worker reads NO_LOG_SUCCESS at module load; it skips formatting a
// log line for every successful job. Set it before importing the library.
process.env.NO_LOG_SUCCESS ??= "1";

const { run, makeWorkerUtils, Logger } = await import("graphile-worker");
const { default: pg } = await import("pg");

const require = createRequire(import.meta.url);

// ---------------------------------------------------------------- arguments

const USAGE = `usage: node bench.mjs [options]
  --database URL          default postgres://postgres@127.0.0.1:5432/swarm_bench_graphile
  --jobs N                jobs per throughput round (default 10000)
  --queues N              named queues, jobs spread round-robin (default 1000)
  --rounds N              throughput rounds per configuration (default 5)
  --concurrency LIST      worker concurrency, comma list e.g. 8,32,128 (default 32)
  --latency-samples N     measured pickup-latency samples (default 500)
  --warmup N              latency warm-up samples, not reported (default 20)
  --configs LIST          configurations to run (default all four:
                          default,batched,tuned,tuned-poll100; see README.md)
  --enqueue-batch N       jobs per addJobs() call (default 1000)
  --max-pool-size N       pg pool size per worker; default max(10, c+2) capped at 40
  --poll-interval MS      set pollInterval (default 2000) in every configuration
                          except tuned-poll100, which always uses 100
  --round-timeout S       give up on a round after S seconds (default 120)
  --timeline              print per-round completions per 250 ms and idle fetches
`;

const { values: argv } = parseArgs({
  options: {
    database: {
      type: "string",
      default: "postgres://postgres@127.0.0.1:5432/swarm_bench_graphile",
    },
    jobs: { type: "string", default: "10000" },
    queues: { type: "string", default: "1000" },
    rounds: { type: "string", default: "5" },
    concurrency: { type: "string", default: "32" },
    "latency-samples": { type: "string", default: "500" },
    warmup: { type: "string", default: "20" },
    configs: { type: "string", default: "default,batched,tuned,tuned-poll100" },
    "enqueue-batch": { type: "string", default: "1000" },
    "max-pool-size": { type: "string" },
    "poll-interval": { type: "string" },
    "round-timeout": { type: "string", default: "120" },
    timeline: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
  strict: true,
});

if (argv.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

function posInt(name, s, { allowZero = false } = {}) {
  const n = Number(s);
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1)) {
    die(`--${name}: expected a ${allowZero ? "non-negative" : "positive"} integer, got ${JSON.stringify(s)}`);
  }
  return n;
}

function die(msg) {
  process.stderr.write(`bench.mjs: ${msg}\n`);
  process.exit(2);
}

const DATABASE = argv.database;
const JOBS = posInt("jobs", argv.jobs);
const QUEUES = posInt("queues", argv.queues);
const ROUNDS = posInt("rounds", argv.rounds);
const CONCURRENCIES = argv.concurrency.split(",").map((s) => posInt("concurrency", s.trim()));
const LATENCY_SAMPLES = posInt("latency-samples", argv["latency-samples"], { allowZero: true });
const WARMUP = posInt("warmup", argv.warmup, { allowZero: true });
const ENQUEUE_BATCH = posInt("enqueue-batch", argv["enqueue-batch"]);
const MAX_POOL_SIZE = argv["max-pool-size"] == null ? null : posInt("max-pool-size", argv["max-pool-size"]);
const POLL_INTERVAL = argv["poll-interval"] == null ? null : posInt("poll-interval", argv["poll-interval"]);
const ROUND_TIMEOUT_MS = posInt("round-timeout", argv["round-timeout"]) * 1000;
const SCHEMA = "graphile_worker";
const TASK = "noop";

// Configurations. All go through graphile-worker's public options.
//  default: library defaults (pollInterval 2000 ms, prepared statements on,
//           no batching); only concurrency and pool size are set.
//  batched: batched job completion (completeJobBatchDelay/failJobBatchDelay 0),
//           documented on https://worker.graphile.org/docs/performance .
//  tuned:   the configuration from that performance page: batched completion
//           plus localQueue (batched getJobs, size 500). NB: in 0.17.x the
//           localQueue can hand out several jobs of the same named queue at
//           once (graphile/worker#621, fixed in 0.18.0, which needs Node 22),
//           so this script counts such violations of the one-at-a-time rule.
//  tuned-poll100: tuned with pollInterval 100 ms.
const CONFIGS = {
  default: () => ({}),
  batched: () => ({
    preset: { worker: { completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  }),
  tuned: (c) => ({
    preset: {
      worker: {
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
        localQueue: { size: Math.max(500, c + 1) },
      },
    },
  }),
  // tuned, plus a 100 ms pollInterval: when a local-queue fetch comes back
  // empty because the remaining jobs' queues are still locked, the pool
  // otherwise waits up to the 2 s default poll before fetching again.
  "tuned-poll100": (c) => ({ pollInterval: 100, ...CONFIGS.tuned(c) }),
};
const CONFIG_NAMES = argv.configs.split(",").map((s) => s.trim()).filter(Boolean);
for (const name of CONFIG_NAMES) {
  if (!Object.hasOwn(CONFIGS, name)) die(`--configs: unknown configuration ${JSON.stringify(name)} (known: ${Object.keys(CONFIGS).join(", ")})`);
}

// ---------------------------------------------------------------- helpers

const log = (msg) => process.stderr.write(`${msg}\n`);
const now = () => process.hrtime.bigint();
const secs = (a, b) => Number(b - a) / 1e9;
const ms = (a, b) => Number(b - a) / 1e6;
const sleep = (t) => new Promise((r) => setTimeout(r, t));
const round3 = (x) => Math.round(x * 1000) / 1000;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return null;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

// Nearest-rank percentile.
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const k = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(k, sorted.length) - 1];
}

function deferred() {
  let resolve, reject;
  const promise = new Promise((a, b) => {
    resolve = a;
    reject = b;
  });
  return { promise, resolve, reject };
}

function withTimeout(promise, timeoutMs, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(t));
}

// Only warnings and errors from graphile-worker, so logging does not dominate;
// a warning repeated by every runner start is printed once.
const warned = new Set();
const quietLogger = new Logger(() => (level, message) => {
  if (level === "warning") {
    if (warned.has(message)) return;
    warned.add(message);
  }
  if (level === "error" || level === "warning") {
    process.stderr.write(`  [graphile-worker ${level}] ${message}\n`);
  }
});

function cpuTimes() {
  let busy = 0;
  let total = 0;
  for (const c of os.cpus()) {
    const t = c.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

// CPU time (ms) of this process and of all `postgres` processes (Linux /proc;
// zero elsewhere). Host busy time minus these is CPU used by everything else on
// the machine during a round, i.e. how much the measurement was disturbed.
function benchCpuMs() {
  const u = process.cpuUsage();
  let pgMs = 0;
  try {
    for (const pid of readdirSync("/proc")) {
      if (!/^[0-9]+$/.test(pid)) continue;
      let stat;
      try {
        stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      } catch {
        continue;
      }
      const close = stat.lastIndexOf(")");
      if (stat.slice(stat.indexOf("(") + 1, close) !== "postgres") continue;
      const f = stat.slice(close + 2).split(" ");
      pgMs += ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime+stime, USER_HZ=100
    }
  } catch {
    // not Linux
  }
  return { self: (u.user + u.system) / 1000, postgres: pgMs };
}

// ---------------------------------------------------------------- database

async function ensureDatabase(url) {
  const u = new URL(url);
  const dbName = decodeURIComponent(u.pathname.replace(/^\//, ""));
  if (!dbName) die("--database must name a database");
  const adminUrl = new URL(url);
  adminUrl.pathname = "/postgres";
  const client = new pg.Client({ connectionString: adminUrl.toString() });
  await client.connect();
  try {
    const { rowCount } = await client.query("select 1 from pg_database where datname = $1", [dbName]);
    if (rowCount === 0) {
      log(`creating database ${dbName}`);
      await client.query(`create database ${client.escapeIdentifier(dbName)}`);
    }
  } finally {
    await client.end();
  }
}

const admin = () => new pg.Pool({ connectionString: DATABASE, max: 2 });

async function resetSchema(pool) {
  await pool.query(`drop schema if exists ${SCHEMA} cascade`);
}

// ---------------------------------------------------------------- worker

function poolSizeFor(c) {
  return MAX_POOL_SIZE ?? Math.min(Math.max(10, c + 2), 40);
}

// The options reported in the JSON; the pool is passed as `pgPool` (see below).
function workerOptions(configName, c) {
  return {
    concurrency: c,
    pgPool: { max: poolSizeFor(c) },
    noPreparedStatements: false,
    ...(POLL_INTERVAL == null ? {} : { pollInterval: POLL_INTERVAL }),
    ...CONFIGS[configName](c),
  };
}

// graphile-worker gets its pool through the public `pgPool` option rather than
// `connectionString` + `maxPoolSize` (which builds the same pg.Pool) so that
// timestamptz values keep their microsecond text: `job.locked_at.pgText` tells
// jobs locked by the same statement apart from jobs locked in the same ms.
const timestamptzOid = 1184;
const parseTimestamptz = pg.types.getTypeParser(timestamptzOid, "text");
const pgTypes = {
  getTypeParser(oid, format) {
    if (oid === timestamptzOid && format !== "binary") {
      return (text) => {
        const d = parseTimestamptz(text);
        if (d instanceof Date) d.pgText = text;
        return d;
      };
    }
    return pg.types.getTypeParser(oid, format);
  },
};

function makeWorkerPool(c) {
  const pool = new pg.Pool({ connectionString: DATABASE, max: poolSizeFor(c), types: pgTypes });
  pool.on("error", (e) => log(`  [pg pool error] ${e.message}`));
  pool.on("connect", (client) => client.on("error", (e) => log(`  [pg client error] ${e.message}`)));
  return pool;
}

// Starts a runner whose only task is `handler`, and waits until its LISTEN
// connection is up (so newly added jobs wake it by NOTIFY).
async function startRunner(configName, c, handler) {
  const events = new EventEmitter();
  const listening = deferred();
  events.once("pool:listen:success", () => listening.resolve());
  events.on("pool:listen:error", ({ error }) => listening.reject(error));
  const fatal = [];
  events.on("pool:fatalError", ({ error, action }) => fatal.push(`${action}: ${error}`));
  events.on("job:error", ({ error, job }) => fatal.push(`job ${job.id} failed: ${error}`));
  const pgPool = makeWorkerPool(c);
  const runner = await run({
    schema: SCHEMA,
    logger: quietLogger,
    noHandleSignals: true,
    events,
    taskList: { [TASK]: handler },
    ...workerOptions(configName, c),
    pgPool,
  });
  await withTimeout(listening.promise, 30_000, "the worker's LISTEN connection");
  const stop = async () => {
    await runner.stop();
    await pgPool.end();
  };
  return { runner, stop, fatal };
}

// ---------------------------------------------------------------- throughput

async function throughputRound(configName, c, adminPool, label) {
  phase = `${label}: schema reset`;
  await resetSchema(adminPool);
  const utils = await makeWorkerUtils({ connectionString: DATABASE, schema: SCHEMA, logger: quietLogger });
  await utils.migrate();

  const runs = new Uint32Array(JOBS); // times each payload index ran
  const jobIds = new Set(); // distinct job ids seen
  let handled = 0;
  let extra = 0; // handler calls for payloads outside 0..JOBS-1
  let lockedAtWithoutMicros = 0; // should stay 0: see pgTypes
  // Same-statement locks of two jobs of one named queue = queue ran >1 job at once.
  const lockedByQueue = new Map(); // `${job_queue_id}/${locked_at}` -> count
  const done = deferred();
  const doneAt = argv.timeline ? new Float64Array(JOBS) : null;

  const handler = async (payload, helpers) => {
    const i = payload?.i;
    if (Number.isInteger(i) && i >= 0 && i < JOBS) runs[i]++;
    else extra++;
    const job = helpers.job;
    jobIds.add(String(job.id));
    if (job.locked_at?.pgText === undefined) lockedAtWithoutMicros++;
    if (job.job_queue_id != null) {
      const k = `${job.job_queue_id}/${job.locked_at?.pgText ?? job.locked_at?.toISOString?.() ?? job.locked_at}`;
      lockedByQueue.set(k, (lockedByQueue.get(k) ?? 0) + 1);
    }
    if (doneAt && handled < JOBS) doneAt[handled] = Number(now());
    if (++handled === JOBS) done.resolve(now());
  };

  const { runner, stop, fatal } = await startRunner(configName, c, handler);
  let emptyFetches = 0;
  runner.events.on("worker:getJob:empty", () => emptyFetches++);
  await sleep(250); // let every worker finish its first (empty) fetch and go idle

  const specs = new Array(JOBS);
  for (let i = 0; i < JOBS; i++) {
    specs[i] = { identifier: TASK, payload: { i }, queueName: `q${i % QUEUES}` };
  }

  phase = `${label}: enqueue and run`;
  const cpu0 = cpuTimes();
  const own0 = benchCpuMs();
  emptyFetches = 0;
  const t0 = now();
  for (let off = 0; off < JOBS; off += ENQUEUE_BATCH) {
    await utils.addJobs(specs.slice(off, off + ENQUEUE_BATCH));
  }
  const tEnqueued = now();

  let tHandlers;
  let timedOut = null;
  try {
    tHandlers = await withTimeout(done.promise, ROUND_TIMEOUT_MS, `${JOBS} jobs to run (ran ${handled})`);
  } catch (e) {
    timedOut = e.message;
  }

  // Completion is durable once the job row is gone (graphile deletes completed
  // jobs); with batched completion that happens shortly after the handler.
  let tDurable = null;
  if (!timedOut) {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const { rows } = await adminPool.query(`select exists(select 1 from ${SCHEMA}._private_jobs) as any`);
      if (!rows[0].any) {
        tDurable = now();
        break;
      }
      if (Date.now() > deadline) {
        timedOut = "jobs table not empty 30 s after the last handler ran";
        break;
      }
      await sleep(1);
    }
  }
  const cpu1 = cpuTimes();
  const own1 = benchCpuMs();
  if (doneAt) {
    const buckets = [];
    for (let j = 0; j < handled && j < JOBS; j++) {
      const b = Math.floor((doneAt[j] - Number(t0)) / 250e6);
      buckets[b] = (buckets[b] ?? 0) + 1;
    }
    log(`    completions per 250 ms: ${Array.from(buckets, (x) => x ?? 0).join(" ")}; empty fetches: ${emptyFetches}`);
  }

  await sleep(50); // a late duplicate would show up here
  phase = `${label}: stopping the worker`;
  await stop();
  phase = `${label}: after the worker stopped`;
  await utils.release();

  const { rows: left } = await adminPool.query(`select count(*)::int as n from ${SCHEMA}.jobs`);
  const { rows: lockedQ } = await adminPool.query(
    `select count(*)::int as n from ${SCHEMA}._private_job_queues where locked_at is not null`,
  );
  let missing = 0;
  let duplicated = 0;
  for (let i = 0; i < JOBS; i++) {
    if (runs[i] === 0) missing++;
    else if (runs[i] > 1) duplicated++;
  }
  let violations = 0;
  for (const n of lockedByQueue.values()) if (n > 1) violations += n - 1;

  const enqueue_s = secs(t0, tEnqueued);
  const total_s = tDurable ? secs(t0, tDurable) : null;
  const handlers_s = tHandlers ? secs(t0, tHandlers) : null;
  return {
    enqueue_s,
    total_s,
    handlers_done_s: handlers_s,
    jobs_per_s: total_s ? JOBS / total_s : 0,
    host_cpu_busy_pct: round3((100 * (cpu1.busy - cpu0.busy)) / Math.max(1, cpu1.total - cpu0.total)),
    // percent of the host's total CPU capacity (all cores) during the round
    node_cpu_pct: round3((100 * (own1.self - own0.self)) / Math.max(1, cpu1.total - cpu0.total)),
    postgres_cpu_pct: round3((100 * (own1.postgres - own0.postgres)) / Math.max(1, cpu1.total - cpu0.total)),
    other_cpu_pct: round3(
      Math.max(0, (100 * (cpu1.busy - cpu0.busy - (own1.self - own0.self) - (own1.postgres - own0.postgres))) / Math.max(1, cpu1.total - cpu0.total)),
    ),
    checks: {
      handled,
      distinct_job_ids: jobIds.size,
      missing,
      duplicated,
      unexpected: extra,
      jobs_left_in_table: left[0].n,
      queues_left_locked: lockedQ[0].n,
      same_queue_jobs_locked_together: violations,
      locked_at_without_microseconds: lockedAtWithoutMicros,
      errors: [...fatal, ...(timedOut ? [timedOut] : [])],
    },
  };
}

// ---------------------------------------------------------------- latency

async function latency(configName, c, adminPool, label) {
  phase = `${label}: schema reset`;
  await resetSchema(adminPool);
  const utils = await makeWorkerUtils({ connectionString: DATABASE, schema: SCHEMA, logger: quietLogger });
  await utils.migrate();

  let pending = null; // { k, started: deferred }
  const handler = async (payload) => {
    const t = now();
    if (pending && payload?.k === pending.k) pending.started.resolve(t);
  };
  const { stop, fatal } = await startRunner(configName, c, handler);
  await sleep(250);

  phase = `${label}: samples`;
  const samples = [];
  const total = WARMUP + LATENCY_SAMPLES;
  let error = null;
  try {
    for (let k = 0; k < total; k++) {
      pending = { k, started: deferred() };
      const queueName = `q${k % QUEUES}`;
      const t0 = now();
      const job = await utils.addJob(TASK, { k }, { queueName });
      const tStart = await withTimeout(pending.started.promise, 30_000, `latency job ${k} to start`);
      if (k >= WARMUP) samples.push(ms(t0, tStart));
      // Wait until the job has finished (its row is deleted) before the next.
      for (let tries = 0; ; tries++) {
        const { rowCount } = await adminPool.query(`select 1 from ${SCHEMA}._private_jobs where id = $1`, [job.id]);
        if (rowCount === 0) break;
        if (tries > 30_000) throw new Error(`latency job ${k} never completed`);
        await sleep(1);
      }
    }
  } catch (e) {
    error = e.message;
  }
  phase = `${label}: stopping the worker`;
  await stop();
  phase = `${label}: after the worker stopped`;
  await utils.release();

  const s = [...samples].sort((a, b) => a - b);
  const r = (x) => (x == null ? null : round3(x));
  return {
    samples: s.length,
    warmup: WARMUP,
    p50: r(percentile(s, 50)),
    p90: r(percentile(s, 90)),
    p99: r(percentile(s, 99)),
    max: r(s.length ? s[s.length - 1] : null),
    mean: r(s.length ? s.reduce((a, b) => a + b, 0) / s.length : null),
    errors: [...fatal, ...(error ? [error] : [])],
  };
}

// ---------------------------------------------------------------- main

// graphile-worker does not await every query it starts (e.g. the unbatched
// completeJob); a rejection of one of those must not kill the benchmark. It is
// logged and reported with the phase it happened in.
let phase = "startup";
const strayErrors = [];
process.on("unhandledRejection", (e) => {
  const msg = `unhandled rejection during ${phase}: ${e?.code ? `[${e.code}] ` : ""}${e?.message ?? e}`;
  strayErrors.push(msg);
  log(`  ${msg}`);
  if (process.env.BENCH_DEBUG) log(e?.stack ?? String(e));
});

process.on("SIGINT", () => {
  log("interrupted");
  process.exit(130);
});

const started = Date.now();
await ensureDatabase(DATABASE);

// Two runs against one database would drop each other's schema mid-round; the
// session-level advisory lock, held until exit, makes a second run refuse.
const lockClient = new pg.Client({ connectionString: DATABASE });
await lockClient.connect();
{
  const { rows } = await lockClient.query("select pg_try_advisory_lock(hashtext('coding-swarm bench/graphile')) as ok");
  if (!rows[0].ok) die(`another bench.mjs is already running against ${DATABASE}; wait for it to finish`);
}
const adminPool = admin();
const { rows: ver } = await adminPool.query("show server_version");
const gwVersion = JSON.parse(await readFile(require.resolve("graphile-worker/package.json"), "utf8")).version;

log(
  `graphile-worker ${gwVersion}, node ${process.version}, postgres ${ver[0].server_version}; ` +
    `${JOBS} jobs over ${QUEUES} queues, ${ROUNDS} rounds, concurrency ${CONCURRENCIES.join(",")}, ` +
    `configs ${CONFIG_NAMES.join(",")}; ${os.cpus().length} CPUs, load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
);

const configs = [];
for (const c of CONCURRENCIES) {
  for (const name of CONFIG_NAMES) {
    const label = `${name} c=${c}`;
    const opts = workerOptions(name, c);
    log(`\n== ${label}: ${JSON.stringify(opts)}`);
    const rounds = [];
    for (let r = 1; r <= ROUNDS; r++) {
      const res = await throughputRound(name, c, adminPool, `${label} round ${r}`);
      rounds.push(res);
      const ck = res.checks;
      const ok =
        ck.missing === 0 &&
        ck.duplicated === 0 &&
        ck.unexpected === 0 &&
        ck.distinct_job_ids === JOBS &&
        ck.jobs_left_in_table === 0 &&
        ck.errors.length === 0;
      log(
        `  round ${r}/${ROUNDS}: enqueue ${res.enqueue_s.toFixed(3)} s, handlers done ${res.handlers_done_s?.toFixed(3) ?? "-"} s, ` +
          `all deleted ${res.total_s?.toFixed(3) ?? "-"} s -> ${res.jobs_per_s.toFixed(0)} jobs/s, host CPU ${res.host_cpu_busy_pct.toFixed(0)}% ` +
          `(node ${res.node_cpu_pct.toFixed(0)}, postgres ${res.postgres_cpu_pct.toFixed(0)}, other ${res.other_cpu_pct.toFixed(0)})` +
          `${ok ? ", all ran exactly once" : `, CHECK FAILED ${JSON.stringify(ck)}`}` +
          `${ck.same_queue_jobs_locked_together ? `, ${ck.same_queue_jobs_locked_together} jobs locked together with a sibling of their named queue` : ""}` +
          `${ck.locked_at_without_microseconds ? `, WARNING: ${ck.locked_at_without_microseconds} jobs without microsecond locked_at (same-queue check degraded)` : ""}`,
      );
    }
    let lat = null;
    if (LATENCY_SAMPLES > 0) {
      lat = await latency(name, c, adminPool, `${label} latency`);
      log(
        `  latency (${lat.samples} samples): p50 ${lat.p50} ms, p90 ${lat.p90} ms, p99 ${lat.p99} ms, max ${lat.max} ms` +
          `${lat.errors.length ? `, ERRORS ${JSON.stringify(lat.errors)}` : ""}`,
      );
    }
    const good = rounds.filter((x) => x.total_s != null);
    const allExactlyOnce = rounds.every(
      (x) =>
        x.checks.missing === 0 &&
        x.checks.duplicated === 0 &&
        x.checks.unexpected === 0 &&
        x.checks.distinct_job_ids === JOBS,
    );
    configs.push({
      name: label,
      concurrency: c,
      options: opts,
      throughput: {
        rounds_jobs_per_s: rounds.map((x) => Math.round(x.jobs_per_s)),
        rounds_total_s: rounds.map((x) => (x.total_s == null ? null : round3(x.total_s))),
        rounds_other_cpu_pct: rounds.map((x) => Math.round(x.other_cpu_pct)),
        median_jobs_per_s: Math.round(median(rounds.map((x) => x.jobs_per_s))),
        median_total_s: round3(median(good.map((x) => x.total_s)) ?? NaN),
        median_enqueue_s: round3(median(rounds.map((x) => x.enqueue_s))),
        median_handlers_done_s: round3(median(good.map((x) => x.handlers_done_s)) ?? NaN),
        median_host_cpu_busy_pct: Math.round(median(rounds.map((x) => x.host_cpu_busy_pct))),
        median_node_cpu_pct: Math.round(median(rounds.map((x) => x.node_cpu_pct))),
        median_postgres_cpu_pct: Math.round(median(rounds.map((x) => x.postgres_cpu_pct))),
        median_other_cpu_pct: Math.round(median(rounds.map((x) => x.other_cpu_pct))),
        all_ran_exactly_once: allExactlyOnce,
        jobs_table_empty_at_end: rounds.every((x) => x.checks.jobs_left_in_table === 0),
        same_queue_jobs_locked_together: rounds.map((x) => x.checks.same_queue_jobs_locked_together),
        errors: rounds.flatMap((x) => x.checks.errors),
      },
      latency_ms: lat,
    });
  }
}

phase = "final cleanup";
await sleep(500);
await resetSchema(adminPool);
await adminPool.end();
await lockClient.end();

const elapsed = (Date.now() - started) / 1000;
log(`\ndone in ${elapsed.toFixed(1)} s`);

const out = {
  peer: "graphile-worker",
  version: gwVersion,
  node: process.version,
  postgres: ver[0].server_version,
  jobs: JOBS,
  queues: QUEUES,
  rounds: ROUNDS,
  enqueue_batch: ENQUEUE_BATCH,
  host: { cpus: os.cpus().length, loadavg_at_end: os.loadavg().map((x) => round3(x)) },
  elapsed_s: round3(elapsed),
  unhandled_rejections: strayErrors,
  configs,
};
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
