// GraphiQL for Millwright: queries and mutations go over HTTP to /graphql, subscriptions over
// a WebSocket at /graphql/ws speaking graphql-transport-ws (graphql-ws's protocol). The
// Authorization entry of GraphiQL's Headers editor goes with every HTTP request and, as
// `authorization` in connection_init's payload, opens the socket: the server reads the token
// there, not from a header (docs/subscriptions.md). The page loads React, ReactDOM, GraphiQL
// (whose `GraphiQL.createFetcher` is @graphiql/toolkit's createGraphiQLFetcher) and graphql-ws
// before this file.
'use strict';

(function () {
  const httpUrl = new URL('/graphql', window.location.href).href;
  const socketUrl = httpUrl.replace(/^http/, 'ws') + '/ws';

  const defaultQuery = `# Millwright's GraphQL API. Put your API key (or a
# connection token) in the Headers editor below:
#   {"Authorization": "Bearer mwk_…"}
# It goes with every request, and opens the socket
# that subscriptions use.
query Me {
  viewer {
    account {
      id
      name
    }
  }
}
`;

  /** The value of the headers' Authorization entry, whatever its case; '' without one. */
  function authorizationOf(headers) {
    for (const [name, value] of Object.entries(headers || {})) {
      if (name.toLowerCase() === 'authorization' && typeof value === 'string') {
        return value;
      }
    }
    return '';
  }

  // One socket at a time, for one Authorization value: the server authenticates a socket
  // once, at connection_init, so another value needs another socket.
  let current = null;

  function fetcherFor(authorization) {
    if (current && current.authorization === authorization) {
      return current.fetcher;
    }
    if (current) {
      current.client.dispose();
    }
    const client = graphqlWs.createClient({
      url: socketUrl,
      lazy: true,
      connectionParams: authorization ? { authorization } : {},
      // 44xx closes say the token was refused or revoked, or the request was wrong: trying
      // again with the same token cannot help, so the error shows at once.
      shouldRetry: (event) => !(event && event.code >= 4400 && event.code < 4500),
    });
    const fetcher = GraphiQL.createFetcher({
      url: httpUrl,
      subscriptionUrl: socketUrl,
      wsClient: client,
      // The server answers with one JSON result; it sends no incremental (multipart) ones.
      enableIncrementalDelivery: false,
    });
    current = { authorization, client, fetcher };
    return fetcher;
  }

  function fetcher(params, options) {
    const headers = (options && options.headers) || {};
    return fetcherFor(authorizationOf(headers))(params, options);
  }

  const root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(
    React.createElement(GraphiQL, {
      fetcher,
      defaultQuery,
      defaultEditorToolsVisibility: 'headers',
      isHeadersEditorEnabled: true,
      // The key stays out of the browser's storage: it is typed again after a reload.
      shouldPersistHeaders: false,
    }),
  );
})();
