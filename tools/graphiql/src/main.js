// The GraphiQL page of graphql-service: built by build.mjs into service/server/graphiql/.
//
// The page (rendered by service/server/graphiql.py) has no inline script: its configuration is
// in data attributes of the #graphiql element. Queries and mutations go over HTTP to the
// GraphQL path; subscriptions go over WebSocket (graphql-transport-ws, the graphql-ws client)
// to the same path, with the headers editor's headers as the connection_init payload, so an
// `Authorization: Bearer ...` header signs in both.
import { createElement } from 'react';
import { createRoot } from 'react-dom/client';
import { GraphiQL } from 'graphiql';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import 'graphiql/style.css';
import './page.css';

const DEFAULT_QUERY = `# GraphiQL, served by graphql-service. Queries and mutations go
# over HTTP, subscriptions over WebSocket (graphql-transport-ws)
# on the same path. To sign in, put this in the Headers tab; it is
# also sent as the WebSocket connection_init payload:
#   {"Authorization": "Bearer <token>"}

{
  hello
}
`;

const root = document.getElementById('graphiql');
const endpoint = new URL(root.dataset.endpoint || '/graphql', window.location.href);
const subscriptionUrl = new URL(endpoint.href);
subscriptionUrl.protocol = endpoint.protocol === 'https:' ? 'wss:' : 'ws:';

const fetcher = createGraphiQLFetcher({
  url: endpoint.href,
  subscriptionUrl: subscriptionUrl.href,
  // The server answers single results (no incremental delivery).
  enableIncrementalDelivery: false,
});

createRoot(root).render(
  createElement(GraphiQL, {
    fetcher,
    defaultQuery: DEFAULT_QUERY,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: false,
  }),
);
