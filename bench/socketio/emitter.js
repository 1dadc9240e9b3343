// Publishes the benchmark's events for the Socket.IO baseline through
// @socket.io/redis-emitter, at a given rate, from a plan written by
// bench/gateway_bench.py.
//
//   node emitter.js <redis-url> <plan.json>
//
// plan.json: {"rate": events per second, "targets": ["all" | "u:<id>", ...],
//             "event": {...}}. Each event is the plan's object with "n" (its
// index) and "t" (Unix milliseconds with a fraction, when emitted) set last,
// as the gateway's publisher does. Prints the emit start time and exits.
"use strict";

const fs = require("fs");
const { createClient } = require("redis");
const { Emitter } = require("@socket.io/redis-emitter");

async function main() {
  const [redisUrl, planPath] = process.argv.slice(2);
  const plan = JSON.parse(fs.readFileSync(planPath, "utf8"));
  const client = createClient({ url: redisUrl });
  await client.connect();
  const emitter = new Emitter(client);
  const now = () => performance.timeOrigin + performance.now();
  const started = now();
  const total = plan.targets.length;
  let sent = 0;
  await new Promise((resolve) => {
    const tick = () => {
      const due = Math.min(total, Math.floor(((now() - started) / 1000) * plan.rate) + 1);
      while (sent < due) {
        const event = { ...plan.event, n: sent, t: now() };
        emitter.to(plan.targets[sent]).emit("event", event);
        sent += 1;
      }
      if (sent >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await client.quit();
  console.log(JSON.stringify({ started, sent }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
