// The GraphQL API with one token: queries and mutations over HTTP (fetch), subscriptions
// over the WebSocket at /graphql/ws (graphql-transport-ws, through the graphql-ws client).

import { createClient } from './vendor/graphql-ws/client.js';

// Relative to this module, so that the UI also works behind a proxy that adds a path prefix.
const HTTP_URL = new URL('../graphql', import.meta.url).href;
const WS_URL = (() => {
  const url = new URL('../graphql/ws', import.meta.url);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
})();

// Close codes after which a new socket with the same token cannot do better (docs/errors.md):
// a refused or revoked token, a protocol error, too many sockets for the token.
const FINAL_CLOSE_CODES = new Set([4400, 4401, 4403, 4409, 4429]);

/** An error of the API: `code` is its `extensions.code`, or NETWORK / HTTP_<status>. */
export class ApiError extends Error {
  constructor(code, message, extensions = {}) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.extensions = extensions;
  }
}

/** Whether the error means the token no longer works (expired, revoked, unknown). */
export function isAuthError(error) {
  return error instanceof ApiError && error.code === 'UNAUTHENTICATED';
}

function fromGraphqlErrors(errors) {
  const first = errors[0];
  const code = first.extensions?.code ?? 'INTERNAL';
  const message = errors.map((e) => e.message).join('; ');
  return new ApiError(code, message, first.extensions ?? {});
}

function fromCloseEvent(event) {
  if (event.code === 4403) {
    return new ApiError('UNAUTHENTICATED', event.reason || 'The token was refused or revoked.', {
      closeCode: event.code,
    });
  }
  if (event.code === 4429) {
    return new ApiError('RATE_LIMITED', event.reason || 'Too many connections.', {
      closeCode: event.code,
    });
  }
  return new ApiError('NETWORK', `The live connection closed (${event.code}${event.reason ? `: ${event.reason}` : ''}).`, {
    closeCode: event.code,
  });
}

function isCloseEvent(value) {
  return value !== null && typeof value === 'object' && 'code' in value && 'reason' in value;
}

/** Whatever a graphql-ws sink received as an error, as an ApiError. */
function toApiError(error) {
  if (error instanceof ApiError) return error;
  if (Array.isArray(error) && error.length > 0) return fromGraphqlErrors(error);
  if (isCloseEvent(error)) return fromCloseEvent(error);
  return new ApiError('NETWORK', 'The live connection to the server failed.');
}

/**
 * A client for `token`. `onUnauthenticated(error)` is called once when the server refuses the
 * token (HTTP UNAUTHENTICATED, or the socket closed with 4403): the caller signs out.
 * `onStatus(status)` follows the socket: `connecting`, `live` or `closed` (it reconnects by
 * itself unless the server refused the token).
 */
export function connectApi(token, { onUnauthenticated, onStatus } = {}) {
  const authorization = `Bearer ${token}`;
  let refused = false;
  const refuse = (error) => {
    if (refused) return;
    refused = true;
    onUnauthenticated?.(error);
  };

  const socket = createClient({
    url: WS_URL,
    connectionParams: { authorization },
    retryAttempts: 10,
    shouldRetry: (event) => isCloseEvent(event) && !FINAL_CLOSE_CODES.has(event.code),
    on: {
      connecting: () => onStatus?.('connecting'),
      connected: () => onStatus?.('live'),
      closed: (event) => {
        onStatus?.('closed');
        if (isCloseEvent(event) && event.code === 4403) refuse(fromCloseEvent(event));
      },
    },
  });

  /**
   * Runs a query or mutation; resolves to its `data`, rejects with an ApiError. With
   * `partial`, a response with both data and errors resolves to its data (the failed fields
   * null).
   */
  async function request(document, variables = {}, { partial = false } = {}) {
    let response;
    try {
      response = await fetch(HTTP_URL, {
        method: 'POST',
        headers: {
          accept: 'application/graphql-response+json, application/json',
          'content-type': 'application/json',
          authorization,
        },
        body: JSON.stringify({ query: document, variables }),
      });
    } catch {
      throw new ApiError('NETWORK', 'The server could not be reached.');
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON (a proxy's error page, a 408 without a body): reported by status below.
    }
    if (body?.errors?.length) {
      const error = fromGraphqlErrors(body.errors);
      if (isAuthError(error)) refuse(error);
      if (!(partial && body.data)) throw error;
    }
    if (!response.ok || !body?.data) {
      throw new ApiError(`HTTP_${response.status}`, `The server answered ${response.status} ${response.statusText}.`);
    }
    return body.data;
  }

  /**
   * Starts a subscription: `next(data)` for each result, `error(ApiError)` when it fails,
   * `complete()` when the server ends it. Returns a function that stops it.
   */
  function subscribe(document, variables, { next, error, complete }) {
    return socket.subscribe(
      { query: document, variables },
      {
        next: (result) => {
          if (result.errors?.length) error?.(fromGraphqlErrors(result.errors));
          else next(result.data);
        },
        error: (e) => error?.(toApiError(e)),
        complete: () => complete?.(),
      },
    );
  }

  return { request, subscribe, close: () => socket.dispose() };
}
