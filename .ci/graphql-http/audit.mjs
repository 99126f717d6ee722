// Runs the graphql-http server audits (the GraphQL-over-HTTP specification's MUSTs, SHOULDs
// and MAYs) against a Millwright server that is already running, and fails unless every
// audit passes. `.ci/run` starts the server and creates the account whose key is used here.
//
//   MILLWRIGHT_GRAPHQL_URL=http://127.0.0.1:8080/graphql MILLWRIGHT_API_KEY=mwk_… npm run audit

import { auditServer } from 'graphql-http';

const url = process.env.MILLWRIGHT_GRAPHQL_URL;
const key = process.env.MILLWRIGHT_API_KEY;
if (!url || !key) {
  console.error('set MILLWRIGHT_GRAPHQL_URL and MILLWRIGHT_API_KEY');
  process.exit(2);
}

// Every audit request runs as an account, as real clients do.
function fetchFn(input, init = {}) {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${key}`);
  return fetch(input, { ...init, headers });
}

const results = await auditServer({ url, fetchFn });
let failed = 0;
for (const result of results) {
  if (result.status === 'ok') {
    console.log(`ok      ${result.id} ${result.name}`);
    continue;
  }
  failed += 1;
  console.log(`${result.status.padEnd(7)} ${result.id} ${result.name}: ${result.reason}`);
  if (result.response) {
    const body = await result.response.text().catch(() => '');
    console.log(`        ${result.response.status} ${result.response.headers.get('content-type')} ${body.slice(0, 300)}`);
  }
}
console.log(`${results.length - failed} of ${results.length} audits passed`);
process.exit(failed === 0 ? 0 : 1);
