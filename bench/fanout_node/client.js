// Many graphql-transport-ws subscribers in one Node process, for `python -m bench fanout-node`.
// Usage: node client.js URL SUBSCRIBERS GROUPS FIELD ROUNDS TIMEOUT_S
// Subscriber i joins group "g<i % GROUPS>". Prints "ready" once every subscription is confirmed
// ({"data": null}, CONFIRM_SUBSCRIPTIONS); then, as the publisher sends rounds (one event per
// group, all carrying the round's number as `value` and the publish time as `sent`), one line
// {"round": n} when every subscriber received round n (the publisher's window), and at the end,
// once every subscriber received ROUNDS events (or at the timeout), one JSON line:
// {"delivered", "malformed", "latencies_ms": [p50, p99, max], "cpu_us"}.
"use strict";
const WebSocket = require("ws");

const [url, subscribersArg, groupsArg, field, roundsArg, timeoutArg] = process.argv.slice(2);
const subscribers = Number(subscribersArg);
const groups = Number(groupsArg);
const rounds = Number(roundsArg);
const latencies = [];
const perRound = new Map();
let confirmed = 0;
let finished = 0;
let delivered = 0;
let malformed = 0; // results without the published value or its send time
let startCpu = process.cpuUsage();

function report() {
  latencies.sort((a, b) => a - b);
  const pick = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : 0);
  const cpu = process.cpuUsage(startCpu);
  process.stdout.write(JSON.stringify({
    delivered,
    malformed,
    latencies_ms: [pick(0.5), pick(0.99), latencies.length ? latencies[latencies.length - 1] : 0],
    cpu_us: cpu.user + cpu.system,
  }) + "\n");
  process.exit(0);
}

setTimeout(report, Number(timeoutArg) * 1000);

// Connections are opened 100 at a time (the next once one is acknowledged): a burst of
// thousands at once overflows the workers' accept backlog and nginx answers 502.
let opened = 0;
function openNext() {
  if (opened < subscribers) subscribe(opened++);
}

function received(value) {
  const count = (perRound.get(value) || 0) + 1;
  if (count === subscribers) {
    perRound.delete(value);
    process.stdout.write(JSON.stringify({ round: value }) + "\n");
  } else {
    perRound.set(value, count);
  }
}

function subscribe(i) {
  const ws = new WebSocket(url, "graphql-transport-ws", { perMessageDeflate: false });
  let count = 0;
  ws.on("open", () => ws.send(JSON.stringify({ type: "connection_init" })));
  ws.on("message", (data) => {
    const message = JSON.parse(data);
    if (message.type === "connection_ack") {
      openNext();
      const query = `subscription { ${field}(group: "g${i % groups}") { value sent } }`;
      ws.send(JSON.stringify({ id: "s", type: "subscribe", payload: { query } }));
    } else if (message.type === "next") {
      const value = message.payload.data && message.payload.data[field];
      if (value === null || value === undefined) {
        if (++confirmed === subscribers) {
          startCpu = process.cpuUsage(); // the measured part starts now
          process.stdout.write("ready\n");
        }
        return;
      }
      if (typeof value.sent !== "number" || typeof value.value !== "number") {
        if (++malformed <= 3) process.stderr.write(`subscriber ${i}: malformed: ${data}\n`);
      } else {
        latencies.push(Date.now() - value.sent * 1000);
      }
      delivered++;
      received(value.value);
      if (++count === rounds && ++finished === subscribers) report();
    } else if (message.type === "error" || message.type === "complete") {
      process.stderr.write(`subscriber ${i}: ${data}\n`);
    }
  });
  ws.on("error", (err) => { process.stderr.write(`subscriber ${i}: ${err}\n`); });
}

for (let k = 0; k < Math.min(100, subscribers); k++) openNext();
