// Apollo Client against the service through nginx: automatic persisted queries (POST, and GET
// with useGETForHashedQueries) and a subscription over Apollo's multipart HTTP protocol.
// Usage: node apollo.mjs <graphql url> <group>. Prints one JSON object per line on stdout;
// the test (tests/e2e/test_http_clients.py) reads them and broadcasts the events.
import { createHash } from "node:crypto";
import { createInterface } from "node:readline";

import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";

const [url, group] = process.argv.slice(2);
// Operation names unique to this run: the shared Redis keeps registered documents for a day.
const run = group.replace(/[^A-Za-z0-9_]/g, "_");
const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const sha256 = (text) => createHash("sha256").update(text).digest("hex");

// Every request the client makes, as the server sees it.
const sent = [];
const loggingFetch = async (input, init = {}) => {
  const target = new URL(typeof input === "string" ? input : input.url);
  const body = init.body ? JSON.parse(init.body) : null;
  const extensions = body?.extensions ?? JSON.parse(target.searchParams.get("extensions") ?? "null");
  sent.push({
    method: init.method ?? "GET",
    query: Boolean(body?.query ?? target.searchParams.get("query")),
    hash: extensions?.persistedQuery?.sha256Hash ?? null,
  });
  return fetch(input, init);
};

function client(options = {}) {
  const http = new HttpLink({ uri: url, fetch: loggingFetch });
  return new ApolloClient({
    link: new PersistedQueryLink({ sha256, ...options }).concat(http),
    cache: new InMemoryCache(),
  });
}

async function persistedQueries() {
  const hello = gql(`query ApolloHello_${run} { hello }`);
  const first = await client().query({ query: hello, fetchPolicy: "network-only" });
  say({ step: "apq-post", data: first.data, sent: sent.splice(0) });
  const again = await client().query({ query: hello, fetchPolicy: "network-only" });
  say({ step: "apq-post-again", data: again.data, sent: sent.splice(0) });

  const echo = gql(`query ApolloEcho_${run}($v: Int!) { echo(value: $v) }`);
  const viaGet = await client({ useGETForHashedQueries: true }).query({
    query: echo,
    variables: { v: 5 },
    fetchPolicy: "network-only",
  });
  say({ step: "apq-get", data: viaGet.data, sent: sent.splice(0) });
  const getAgain = await client({ useGETForHashedQueries: true }).query({
    query: echo,
    variables: { v: 6 },
    fetchPolicy: "network-only",
  });
  say({ step: "apq-get-again", data: getAgain.data, sent: sent.splice(0) });
}

function subscribe(query, variables, limit) {
  return new Promise((resolve, reject) => {
    const values = [];
    const subscription = new ApolloClient({
      link: new HttpLink({ uri: url }),
      cache: new InMemoryCache(),
    })
      .subscribe({ query, variables })
      .subscribe({
        next: (result) => {
          if (result.error) return reject(result.error);
          values.push(result.data);
          say({ step: "event", data: result.data });
          if (limit && values.length >= limit) {
            subscription.unsubscribe(); // aborts the HTTP request: the server ends it
            resolve({ values, completed: false });
          }
        },
        error: reject,
        complete: () => resolve({ values, completed: true }),
      });
  });
}

async function subscriptions() {
  const counted = await subscribe(gql`subscription ApolloCount { count(upto: 3) }`, {}, 0);
  say({ step: "multipart-complete", ...counted });
  say({ step: "multipart-subscribing" });
  const ticks = await subscribe(
    gql`subscription ApolloTick($g: String) { ticker(group: $g) { value } }`,
    { g: group },
    2,
  );
  say({ step: "multipart-fanout", ...ticks });
}

try {
  await persistedQueries();
  await subscriptions();
  say({ step: "done" });
  process.exit(0);
} catch (error) {
  say({ step: "failed", error: String(error?.stack ?? error) });
  process.exit(1);
}
