// Many graphql-transport-ws subscribers in one Node process, for `python -m bench fanout`.
// Usage: node client.js URL SUBSCRIBERS GROUPS FIELD EXPECTED_PER_SUBSCRIBER TIMEOUT_S
// Prints "ready" once every subscription is confirmed ({"data": null}, CONFIRM_SUBSCRIPTIONS),
// then one JSON line when every subscriber received EXPECTED messages (or at the timeout):
// {"delivered", "latencies_ms": [p50, p99, max], "cpu_us"}.
"use strict";
const WebSocket = require("ws");

const [url, subscribersArg, groupsArg, field, expectedArg, timeoutArg] = process.argv.slice(2);
const subscribers = Number(subscribersArg);
const groups = Number(groupsArg);
const expected = Number(expectedArg);
const latencies = [];
let confirmed = 0;
let finished = 0;
let delivered = 0;
const startCpu = process.cpuUsage();

function report() {
  latencies.sort((a, b) => a - b);
  const pick = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : 0);
  const cpu = process.cpuUsage(startCpu);
  process.stdout.write(JSON.stringify({
    delivered,
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

function subscribe(i) {
  const ws = new WebSocket(url, "graphql-transport-ws");
  let received = 0;
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
        if (++confirmed === subscribers) process.stdout.write("ready\n");
        return;
      }
      delivered++;
      latencies.push(Date.now() - value.sent * 1000);
      if (++received === expected && ++finished === subscribers) report();
    }
  });
  ws.on("error", (err) => { process.stderr.write(`subscriber ${i}: ${err}\n`); });
}

for (let k = 0; k < Math.min(100, subscribers); k++) openNext();
