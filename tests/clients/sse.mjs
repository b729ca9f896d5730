// The graphql-sse client (distinct connections mode) against the service through nginx: a
// query, a subscription to completion, and a subscription to Redis fanout events that the
// client leaves after two. Usage: node sse.mjs <graphql url> <group>; JSON lines on stdout.
import { createClient } from "graphql-sse";

const [url, group] = process.argv.slice(2);
const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");

const client = createClient({ url, singleConnection: false, retryAttempts: 0 });

async function collect(payload, limit) {
  const results = [];
  const iterator = client.iterate(payload);
  for await (const result of iterator) {
    results.push(result);
    say({ step: "event", result });
    if (limit && results.length >= limit) {
      await iterator.return(); // closes the event stream: the server ends the subscription
      break;
    }
  }
  return results;
}

try {
  say({ step: "query", results: await collect({ query: "{ hello }" }) });
  say({ step: "complete", results: await collect({ query: "subscription { count(upto: 3) }" }) });
  say({ step: "errors", results: await collect({ query: "{ nope }" }) });
  say({ step: "subscribing" });
  const ticks = await collect(
    { query: "subscription($g: String) { ticker(group: $g) { value } }", variables: { g: group } },
    2,
  );
  say({ step: "fanout", results: ticks });
  client.dispose();
  say({ step: "done" });
  process.exit(0);
} catch (error) {
  say({ step: "failed", error: String(error?.stack ?? error) });
  process.exit(1);
}
