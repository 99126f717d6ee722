// The connect portal (/ui/connect#token=mwp_…): the page a vendor opens for one of its
// customers, in a frame or a popup, with a portal session token. The customer picks one of
// the systems the session allows, enters its credentials, connects, and watches the first
// sync; it sees and may disconnect its connections. The token is read from the URL fragment
// (which never reaches the server or its logs) and then taken out of the address bar.
//
// The page tells the window that opened or framed it what happened, with postMessage:
// { source: 'millwright-connect', type: 'connected' | 'sync-finished' | 'disconnected' |
// 'session-ended', ... } (docs/ui.md).

import { ApiError, connectApi, isAuthError } from './api.js';
import { $, badge, busy, confirmDialog, credentialInputs, fill, h, humanize, session, showError, time } from './ui.js';

const TOKEN_STORAGE = 'millwright.portal.token';
const ACTIVE = new Set(['QUEUED', 'RUNNING']);

const CONNECTION = `fragment PortalConnection on Connection {
  id label status statusReason deployment createdAt
  system { key name }
  lastSyncRun { id status recordsAdded recordsUpdated recordsDeleted finishedAt error { code message } }
}`;

const Q = {
  session: `query PortalSession { portalSession { id expiresAt allowedSystems customer { id name } } }`,
  systems: `query PortalSystems { systems { key name vendor deployments credentialFields { name label secret required kind min max choices } } }`,
  connections: `query PortalConnections($customerId: ID) {
    connections(first: 100, customerId: $customerId) { nodes { ...PortalConnection } }
  }
  ${CONNECTION}`,
  connect: `mutation PortalConnect($input: ConnectInput!) { connect(input: $input) { connection { ...PortalConnection } } }
  ${CONNECTION}`,
  disconnect: `mutation PortalDisconnect($id: ID!) { disconnect(id: $id) { ...PortalConnection } }
  ${CONNECTION}`,
  connectionStatus: `subscription PortalConnectionStatus($customerId: ID) { connectionStatus(customerId: $customerId) { ...PortalConnection } }
  ${CONNECTION}`,
  syncRun: `subscription PortalSyncRun($id: ID!) {
    syncRun(id: $id) { id status recordsAdded recordsUpdated recordsDeleted finishedAt error { code message } }
  }`,
};

let api = null;
let ended = false;
let customer = null;
let systems = [];
let readCredentials = () => ({});
const connections = new Map(); // id → { item, parts, connection }
let stopFirstSync = null;

/** Tells the page that opened or framed this one what happened (it may close the popup). */
function tellEmbedder(type, detail = {}) {
  const target = window.opener ?? (window.parent !== window ? window.parent : null);
  target?.postMessage({ source: 'millwright-connect', type, ...detail }, '*');
}

/** The token from `#token=…` (then removed from the address bar), or the one kept for this tab. */
function takeToken() {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromUrl) {
    history.replaceState(null, '', location.pathname + location.search);
    session.set(TOKEN_STORAGE, fromUrl);
    return fromUrl;
  }
  return session.get(TOKEN_STORAGE);
}

/** The session is over (expired, revoked, or no token): says so and stops everything. */
function end(error) {
  if (ended) return;
  ended = true;
  session.remove(TOKEN_STORAGE);
  stopFirstSync?.();
  api?.close();
  $('#portal-app').hidden = true;
  $('#portal-loading').hidden = true;
  fill(
    $('#portal-ended-reason'),
    error?.code === 'UNAUTHENTICATED'
      ? 'The link has expired or was revoked.'
      : error?.message ?? 'The link is incomplete: it has no connect token.',
    error?.code ? ` (${error.code})` : '',
  );
  $('#portal-ended').hidden = false;
  $('#main').focus();
  tellEmbedder('session-ended', { code: error?.code ?? null });
}

async function start() {
  const token = takeToken();
  if (!token || !token.startsWith('mwp_')) {
    end(null);
    return;
  }
  api = connectApi(token, { onUnauthenticated: (e) => end(e) });
  let portalSession;
  try {
    const data = await api.request(Q.session);
    portalSession = data.portalSession;
    ({ systems } = await api.request(Q.systems));
  } catch (e) {
    if (isAuthError(e)) end(e);
    else {
      fill($('#portal-loading'), h('span', { class: 'error', role: 'alert' }, e.message));
    }
    return;
  }
  if (!portalSession) {
    end(new ApiError('FORBIDDEN', 'This page needs a connect link, not another kind of token.'));
    return;
  }
  customer = portalSession.customer;
  // One element: the bar is a flex row, which would space a bare text node from its name.
  fill($('#portal-customer'), h('span', {}, 'For ', h('strong', {}, customer.name)));
  fill($('#portal-expires'), 'Link valid until ', time(portalSession.expiresAt));
  const left = new Date(portalSession.expiresAt).getTime() - Date.now();
  // setTimeout takes at most 2^31-1 ms; sessions last a day at most.
  setTimeout(() => end(new ApiError('UNAUTHENTICATED', 'The link has expired.')), Math.min(Math.max(left, 0), 2 ** 31 - 1));
  showSystems();
  $('#portal-loading').hidden = true;
  $('#portal-app').hidden = false;
  await loadConnections();
  api.subscribe(Q.connectionStatus, { customerId: customer.id }, {
    next: ({ connectionStatus }) => showConnection(connectionStatus),
    error: (e) => {
      if (!ended) showError($('[data-testid=portal-connections-error]'), e);
    },
  });
}

// ---------------------------------------------------------------- connecting

function showSystems() {
  const options = $('#portal-system-options');
  if (systems.length === 0) {
    fill(options, h('p', { class: 'muted' }, 'No system can be connected from this link.'));
    $('[data-testid=portal-connect-submit]').disabled = true;
    return;
  }
  fill(
    options,
    systems.map((system) =>
      h(
        'label',
        { class: 'option' },
        h('input', {
          type: 'radio',
          name: 'systemKey',
          value: system.key,
          required: true,
          testid: `system-option-${system.key}`,
          onchange: () => pickSystem(system),
        }),
        h('span', { class: 'name' }, system.name),
        h('span', { class: 'muted' }, system.vendor),
      ),
    ),
  );
  if (systems.length === 1) {
    $('input[name=systemKey]', options).checked = true;
    pickSystem(systems[0]);
  }
}

function pickSystem(system) {
  const field = $('#portal-deployment-field');
  fill($('#portal-deployment'), system.deployments.map((d) => h('option', { value: d }, humanize(d))));
  field.hidden = system.deployments.length < 2;
  $('#portal-credentials-set').hidden = false;
  readCredentials = credentialInputs($('#portal-credentials'), system.credentialFields, 'portal-credential');
}

async function submit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $('[data-testid=portal-connect-error]', form);
  const credentials = readCredentials();
  if (!credentials) return; // Each wrong value says why under its input.
  const input = {
    customerId: customer.id,
    systemKey: form.elements.systemKey.value,
    deployment: form.elements.deployment.value,
    label: form.elements.label.value.trim() || null,
    credentials,
  };
  try {
    const { connect } = await busy(form, () => api.request(Q.connect, { input }));
    showError(error, null);
    form.reset();
    $('#portal-credentials-set').hidden = true;
    fill($('#portal-credentials'));
    readCredentials = () => ({});
    showSystems();
    const connection = connect.connection;
    showConnection(connection);
    tellEmbedder('connected', { connectionId: connection.id, systemKey: connection.system.key });
    watchFirstSync(connection);
  } catch (e) {
    showError(error, e);
  }
}

/** Follows the sync `connect` queued until it ends. */
function watchFirstSync(connection) {
  stopFirstSync?.();
  const section = $('#portal-first-sync');
  section.hidden = false;
  const run = connection.lastSyncRun;
  if (!run) {
    showFirstSync({ status: 'QUEUED', recordsAdded: 0, recordsUpdated: 0, recordsDeleted: 0 });
    return;
  }
  showFirstSync(run);
  stopFirstSync = api.subscribe(Q.syncRun, { id: run.id }, {
    next: ({ syncRun }) => {
      showFirstSync(syncRun);
      const entry = connections.get(connection.id);
      if (entry) showConnection({ ...entry.connection, lastSyncRun: syncRun });
      if (!ACTIVE.has(syncRun.status)) {
        tellEmbedder('sync-finished', { connectionId: connection.id, status: syncRun.status });
      }
    },
    error: (e) => {
      const message = $('#first-sync-error');
      message.hidden = false;
      fill(message, e.message);
    },
  });
}

function showFirstSync(run) {
  const status = $('#first-sync-status');
  status.dataset.status = run.status;
  fill(status, badge(run.status));
  fill(
    $('#first-sync-counts'),
    ` ${run.recordsAdded} records added, ${run.recordsUpdated} updated, ${run.recordsDeleted} deleted`,
    ACTIVE.has(run.status) ? ' so far…' : '.',
  );
  const message = $('#first-sync-error');
  message.hidden = !run.error;
  fill(message, run.error ? `${run.error.code}: ${run.error.message}` : '');
}

// ---------------------------------------------------------------- connections

async function loadConnections() {
  const error = $('[data-testid=portal-connections-error]');
  try {
    const { connections: page } = await api.request(Q.connections, { customerId: customer.id });
    showError(error, null);
    for (const connection of page.nodes) showConnection(connection);
    if (page.nodes.length === 0) $('#portal-connection-list').append(h('li', { class: 'muted empty' }, 'No connections yet.'));
  } catch (e) {
    showError(error, e);
  }
}

/** A connection's row, made once; updates change its text, so focus stays on its button. */
function row(id) {
  let entry = connections.get(id);
  if (entry) return entry;
  const parts = {
    title: h('h3'),
    status: h('span'),
    meta: h('p', { class: 'muted' }),
    reason: h('p', { class: 'reason', hidden: true }),
    lastSync: h('p', { hidden: true }),
    disconnect: h(
      'button',
      { type: 'button', class: 'danger', testid: 'portal-disconnect', onclick: () => disconnect(entry.connection) },
      'Disconnect',
    ),
  };
  const item = h(
    'li',
    { class: 'card', testid: 'portal-connection-row', dataset: { connectionId: id }, tabindex: '-1' },
    h('div', { class: 'card-head' }, parts.title, parts.status),
    parts.meta,
    parts.reason,
    parts.lastSync,
    h('div', { class: 'actions' }, parts.disconnect),
  );
  const list = $('#portal-connection-list');
  $('.empty', list)?.remove();
  list.append(item);
  entry = { item, parts, connection: null };
  connections.set(id, entry);
  return entry;
}

function showConnection(connection) {
  const entry = row(connection.id);
  const { item, parts } = entry;
  entry.connection = connection;
  const run = connection.lastSyncRun;
  item.dataset.status = connection.status;
  fill(parts.title, connection.label || connection.system.name);
  fill(parts.status, badge(connection.status, 'portal-connection-status'));
  fill(parts.meta, `${connection.system.name} · ${humanize(connection.deployment)} · connected `, time(connection.createdAt));
  parts.reason.hidden = !connection.statusReason;
  fill(parts.reason, connection.statusReason ?? '');
  parts.lastSync.hidden = !run;
  if (run) fill(parts.lastSync, 'Last sync: ', badge(run.status), ` ${run.recordsAdded} added, ${run.recordsUpdated} updated`);
  if (connection.status === 'DISCONNECTED') {
    if (document.activeElement === parts.disconnect) item.focus();
    parts.disconnect.hidden = true;
  }
}

async function disconnect(connection) {
  const name = connection.label || connection.system.name;
  if (!(await confirmDialog(`Disconnect ${name}? Its data stops being read.`, 'Disconnect'))) return;
  try {
    const { disconnect: result } = await api.request(Q.disconnect, { id: connection.id });
    showConnection(result);
    tellEmbedder('disconnected', { connectionId: result.id });
  } catch (e) {
    showError($('[data-testid=portal-connections-error]'), e);
  }
}

$('#portal-form').addEventListener('submit', submit);
start();
