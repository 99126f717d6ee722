// The console (/ui/): an account's customers, connections, credits, sync runs, events and
// webhooks, signed in with one of its API keys. Live parts run over one WebSocket: the event
// feed (which also moves the credits gauge and finds new sync runs), the open customer's
// connection statuses, and each running sync.

import { ApiError, connectApi, isAuthError } from './api.js';
import { $, badge, busy, confirmDialog, credentialInputs, debounce, fill, h, humanize, openDialog, plural, session, showError, time } from './ui.js';

const KEY_STORAGE = 'millwright.console.apiKey';
const PAGE_SIZE = 20;
const FEED_LENGTH = 200;
const ACTIVE = new Set(['QUEUED', 'RUNNING']);
const LIVE = { connecting: 'connecting…', live: 'live', closed: 'offline, reconnecting…' };

const RUN = `fragment Run on SyncRun {
  id kind trigger status queuedAt startedAt finishedAt recordsAdded recordsUpdated recordsDeleted
  entities { entity added updated deleted unchanged skipped rateLimited }
  error { code message }
}`;
const CONNECTION = `fragment Conn on Connection {
  id label status statusReason deployment creditCost createdAt disconnectedAt lastCheckedAt
  system { key name }
  lastSyncRun { ...Run }
}
${RUN}`;

const Q = {
  viewer: `query ConsoleViewer { viewer { account { id name credits { total used available } } } }`,
  credits: `query ConsoleCredits { viewer { account { credits { total used available } } } }`,
  customers: `query ConsoleCustomers($first: Int, $after: String, $search: String) {
    customers(first: $first, after: $after, search: $search) {
      pageInfo { hasNextPage endCursor }
      nodes { id name externalId }
    }
  }`,
  createCustomer: `mutation ConsoleCreateCustomer($input: CreateCustomerInput!) { createCustomer(input: $input) { id name } }`,
  customer: `query ConsoleCustomer($id: ID!) {
    customer(id: $id) {
      id name externalId
      connections(first: 100) { pageInfo { hasNextPage } nodes { ...Conn } }
    }
  }
  ${CONNECTION}`,
  connectionStatus: `subscription ConsoleConnectionStatus($customerId: ID) { connectionStatus(customerId: $customerId) { ...Conn } }
  ${CONNECTION}`,
  syncRun: `subscription ConsoleSyncRun($id: ID!) { syncRun(id: $id) { ...Run } }
  ${RUN}`,
  syncRuns: `query ConsoleSyncRuns($id: ID!, $after: String) {
    connection(id: $id) {
      syncRuns(first: ${PAGE_SIZE}, after: $after) {
        pageInfo { hasNextPage endCursor }
        nodes { ...Run }
      }
    }
  }
  ${RUN}`,
  triggerSync: `mutation ConsoleTriggerSync($id: ID!) { triggerSync(connectionId: $id) { ...Run } }
  ${RUN}`,
  systems: `query ConsoleSystems {
    systems {
      key name vendor tier deployments
      cloud: creditCost(deployment: CLOUD) onPremises: creditCost(deployment: ON_PREMISES)
      credentialFields { name label secret required kind min max choices }
    }
  }`,
  connect: `mutation ConsoleConnect($input: ConnectInput!) { connect(input: $input) { token connection { ...Conn } } }
  ${CONNECTION}`,
  disconnect: `mutation ConsoleDisconnect($id: ID!) { disconnect(id: $id) { ...Conn } }
  ${CONNECTION}`,
  events: `subscription ConsoleEvents { events { id type occurredAt customerId connectionId data } }`,
  endpoints: `query ConsoleWebhookEndpoints {
    webhookEndpoints(first: 100) { nodes { id url description enabled disabledReason eventTypes createdAt } }
  }`,
  createEndpoint: `mutation ConsoleCreateWebhookEndpoint($input: CreateWebhookEndpointInput!) {
    createWebhookEndpoint(input: $input) { secret endpoint { id } }
  }`,
  deliveries: `query ConsoleDeliveries($id: ID!, $after: String, $status: DeliveryStatus) {
    webhookEndpoint(id: $id) {
      deliveries(first: 50, after: $after, status: $status) {
        pageInfo { hasNextPage endCursor }
        nodes { id status attemptCount nextAttemptAt createdAt }
      }
    }
  }`,
  // The event is asked for apart: once retention pruned it, it is an error that would
  // otherwise take the attempts with it.
  delivery: `query ConsoleDelivery($id: ID!) {
    delivery: node(id: $id) {
      ... on WebhookDelivery {
        id status attemptCount nextAttemptAt
        attempts { attemptedAt responseStatus durationMs error responseBody }
      }
    }
    carried: node(id: $id) { ... on WebhookDelivery { event { id type occurredAt } } }
  }`,
  redeliver: `mutation ConsoleRedeliver($id: ID!) { redeliverWebhook(deliveryId: $id) { id status attemptCount nextAttemptAt createdAt } }`,
  testWebhook: `mutation ConsoleTestWebhook($id: ID!) { sendTestWebhook(endpointId: $id) { id } }`,
};

let api = null;
let stopEvents = null;
// `ticket` numbers each read of the list, so that an answer that comes after a newer
// request's (a slow search) is dropped.
const customers = { search: '', cursors: [null], page: 0, ticket: 0 };
const open = {
  customer: null,
  ticket: 0, // numbers each opening, so that a slow answer for a customer left since is dropped
  partial: false, // whether it has more connections than the first 100 shown
  stopStatus: null,
  connections: new Map(), // id → Connection
  cards: new Map(), // id → { item, summary, history, runs: Map, pageInfo, loaded }
  following: new Map(), // run id → stop function
};
const webhooks = { endpoint: null, after: null };

// ---------------------------------------------------------------- sign-in and sign-out

async function signIn(key) {
  const form = $('#signin-form');
  const error = $('[data-testid=signin-error]', form);
  if (!key.startsWith('mwk_')) {
    showError(error, new ApiError('BAD_USER_INPUT', 'An account API key starts with mwk_'));
    return;
  }
  const client = connectApi(key, {
    onUnauthenticated: (e) => {
      if (api === client) signOut(e);
    },
    onStatus: (status) => fill($('#live'), LIVE[status]),
  });
  let viewer;
  try {
    viewer = (await client.request(Q.viewer)).viewer;
  } catch (e) {
    client.close();
    if (isAuthError(e)) session.remove(KEY_STORAGE);
    showError(error, e);
    return;
  }
  api = client;
  session.set(KEY_STORAGE, key);
  showError(error, null);
  form.reset();
  $('#signin').hidden = true;
  for (const id of ['#nav', '#credits', '#account']) $(id).hidden = false;
  fill($('#account-name'), viewer.account.name);
  showCredits(viewer.account.credits);
  startEvents();
  show('customers');
  loadCustomers();
}

/** Back to the sign-in form; with `error` when the server refused the key. */
function signOut(error) {
  session.remove(KEY_STORAGE);
  closeCustomer();
  stopEvents?.();
  stopEvents = null;
  api?.close();
  api = null;
  for (const id of ['#nav', '#credits', '#account']) $(id).hidden = true;
  for (const view of document.querySelectorAll('.view')) view.hidden = true;
  for (const list of ['#customer-list', '#event-feed', '#webhook-list', '#delivery-list']) fill($(list));
  $('#signin').hidden = false;
  showError($('[data-testid=signin-error]'), error ?? null);
  $('#signin-key').focus();
}

function show(view) {
  for (const button of document.querySelectorAll('#nav button')) {
    if (button.dataset.view === view) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
  }
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${view}`;
  if (view === 'webhooks') loadEndpoints();
}

// ---------------------------------------------------------------- credits and events

function showCredits({ total, used, available }) {
  fill($('[data-testid=credits-total]'), total);
  fill($('[data-testid=credits-used]'), used);
  fill($('[data-testid=credits-available]'), available);
  const meter = $('#credits-meter');
  meter.max = Math.max(total, 1);
  meter.value = used;
  meter.high = Math.max(total, 1) * 0.9;
  meter.title = `${used} of ${total} credits in use`;
}

async function refreshCredits() {
  try {
    showCredits((await api.request(Q.credits)).viewer.account.credits);
  } catch (e) {
    if (!isAuthError(e)) console.warn('credits', e);
  }
}

function startEvents() {
  const feed = $('#event-feed');
  const client = api;
  stopEvents = client.subscribe(Q.events, {}, {
    next: ({ events: event }) => {
      feed.prepend(eventItem(event));
      while (feed.children.length > FEED_LENGTH) feed.lastElementChild.remove();
      if (event.type === 'CREDITS_CHANGED') refreshCredits();
      if (event.type === 'SYNC_STARTED' && open.connections.has(event.connectionId) && event.data?.sync_run_id) {
        followRun(event.connectionId, event.data.sync_run_id);
      }
    },
    error: (e) => {
      // After signing out (a refused key ends every subscription) there is nothing to say.
      if (api === client) feed.prepend(h('li', { class: 'error', role: 'alert' }, `The live feed stopped: ${e.message}`));
    },
  });
}

function eventItem(event) {
  const data = JSON.stringify(event.data ?? {});
  return h(
    'li',
    { testid: 'event-item', dataset: { eventType: event.type, eventId: event.id } },
    h('span', { class: 'event-type' }, humanize(event.type)),
    time(event.occurredAt),
    h('span', { class: 'muted ids' }, [event.customerId, event.connectionId].filter(Boolean).join(' · ')),
    h('code', { class: 'event-data' }, data.length > 240 ? `${data.slice(0, 240)}…` : data),
  );
}

// ---------------------------------------------------------------- customers

async function loadCustomers() {
  const list = $('#customer-list');
  const error = $('[data-testid=customers-error]');
  const ticket = ++customers.ticket;
  list.setAttribute('aria-busy', 'true');
  try {
    const { customers: page } = await api.request(Q.customers, {
      first: PAGE_SIZE,
      after: customers.cursors[customers.page],
      search: customers.search || null,
    });
    if (ticket !== customers.ticket) return;
    showError(error, null);
    fill(
      list,
      page.nodes.length === 0 ? h('li', { class: 'muted' }, customers.search ? 'No customer matches.' : 'No customers yet.') : null,
      page.nodes.map((customer) =>
        h(
          'li',
          { testid: 'customer-row', dataset: { customerId: customer.id } },
          h(
            'button',
            {
              type: 'button',
              class: 'row-button',
              'aria-current': open.customer?.id === customer.id ? 'true' : null,
              onclick: () => openCustomer(customer.id),
            },
            h('span', { class: 'name' }, customer.name),
            h('span', { class: 'muted' }, customer.externalId ?? ''),
          ),
        ),
      ),
    );
    customers.cursors[customers.page + 1] = page.pageInfo.endCursor;
    $('#customers-next').disabled = !page.pageInfo.hasNextPage;
    $('#customers-prev').disabled = customers.page === 0;
    fill($('#customers-page'), `Page ${customers.page + 1}`);
  } catch (e) {
    showError(error, e);
  } finally {
    list.removeAttribute('aria-busy');
  }
}

async function createCustomer(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $('[data-testid=customer-create-error]', form);
  const name = form.elements.name.value.trim();
  const externalId = form.elements.externalId.value.trim();
  try {
    const { createCustomer: customer } = await busy(form, () =>
      api.request(Q.createCustomer, { input: { name, externalId: externalId || null } }),
    );
    showError(error, null);
    form.reset();
    customers.search = '';
    $('#customer-search').value = '';
    customers.cursors = [null];
    customers.page = 0;
    await loadCustomers();
    openCustomer(customer.id);
  } catch (e) {
    showError(error, e);
  }
}

// ---------------------------------------------------------------- one customer's connections

function closeCustomer() {
  open.stopStatus?.();
  open.stopStatus = null;
  for (const stop of open.following.values()) stop();
  open.following.clear();
  open.connections.clear();
  open.cards.clear();
  open.customer = null;
  fill($('#connection-list'));
}

async function openCustomer(id) {
  closeCustomer();
  const error = $('[data-testid=connections-error]');
  $('#connection-token').hidden = true;
  for (const row of document.querySelectorAll('[data-testid=customer-row] button')) {
    if (row.parentElement.dataset.customerId === id) row.setAttribute('aria-current', 'true');
    else row.removeAttribute('aria-current');
  }
  const ticket = ++open.ticket;
  let customer;
  try {
    customer = (await api.request(Q.customer, { id })).customer;
  } catch (e) {
    if (ticket === open.ticket) showError(error, e);
    return;
  }
  if (ticket !== open.ticket) return;
  if (!customer) {
    showError(error, new ApiError('NOT_FOUND', 'The customer no longer exists'));
    return;
  }
  showError(error, null);
  open.customer = customer;
  fill($('#customer-title'), customer.name);
  $('#customer-actions').hidden = false;
  open.partial = customer.connections.pageInfo.hasNextPage;
  const list = $('#connection-list');
  if (customer.connections.nodes.length === 0) list.append(h('li', { class: 'muted empty' }, 'No connections yet.'));
  for (const connection of customer.connections.nodes) showConnection(connection);
  showCustomerMeta();
  open.stopStatus = api.subscribe(Q.connectionStatus, { customerId: id }, {
    next: ({ connectionStatus }) => {
      if (open.customer?.id === id) showConnection(connectionStatus);
    },
    error: (e) => {
      if (open.customer?.id === id) showError(error, e);
    },
  });
}

/**
 * The card of a connection, made once: live updates change its text, never its buttons, so
 * that keyboard focus stays where it is while a sync reports progress.
 */
function card(id) {
  let entry = open.cards.get(id);
  if (entry) return entry;
  const history = h('section', { class: 'history', id: `history-${id}`, hidden: true, 'aria-label': 'Sync history' });
  const parts = {
    title: h('h3'),
    status: h('span'),
    meta: h('p', { class: 'muted' }),
    reason: h('p', { class: 'reason', testid: 'connection-status-reason', hidden: true }),
    lastSync: h('p', { testid: 'connection-last-sync' }),
    toggle: h(
      'button',
      {
        type: 'button',
        testid: 'connection-history-toggle',
        'aria-expanded': 'false',
        'aria-controls': history.id,
        onclick: (event) => toggleHistory(id, event.currentTarget),
      },
      'Sync history',
    ),
    sync: h('button', { type: 'button', testid: 'connection-sync', onclick: () => syncNow(id) }, 'Sync now'),
    disconnect: h(
      'button',
      { type: 'button', class: 'danger', testid: 'connection-disconnect', onclick: () => disconnect(open.connections.get(id)) },
      'Disconnect',
    ),
  };
  const item = h(
    'li',
    { class: 'card', testid: 'connection-row', dataset: { connectionId: id } },
    h('div', { class: 'card-head' }, parts.title, parts.status),
    parts.meta,
    parts.reason,
    parts.lastSync,
    h('div', { class: 'actions' }, parts.toggle, parts.sync, parts.disconnect),
    history,
  );
  $('#connection-list .empty')?.remove();
  $('#connection-list').append(item);
  entry = { item, parts, history, runs: new Map(), pageInfo: null, loaded: false };
  open.cards.set(id, entry);
  return entry;
}

/** Shows a connection as it now stands (a new one is added), and follows its running sync. */
function showConnection(connection) {
  const previous = open.connections.get(connection.id);
  // A status event may carry a run older than one the run's own subscription has shown.
  if (previous?.lastSyncRun && connection.lastSyncRun && newer(previous.lastSyncRun, connection.lastSyncRun)) {
    connection = { ...connection, lastSyncRun: previous.lastSyncRun };
  }
  open.connections.set(connection.id, connection);
  const { item, parts, loaded } = card(connection.id);
  const live = connection.status !== 'DISCONNECTED';
  const run = connection.lastSyncRun;
  item.dataset.status = connection.status;
  fill(parts.title, connection.label || connection.system.name);
  fill(parts.status, badge(connection.status, 'connection-status'));
  fill(
    parts.meta,
    `${connection.system.name} · ${humanize(connection.deployment)} · ${plural(connection.creditCost, 'credit')} · `,
    h('code', {}, connection.id),
  );
  parts.reason.hidden = !connection.statusReason;
  fill(parts.reason, connection.statusReason ?? '');
  fill(
    parts.lastSync,
    'Last sync: ',
    run ? [badge(run.status), ' ', counts(run), ' · ', time(run.finishedAt ?? run.startedAt ?? run.queuedAt)] : 'none yet',
  );
  if (!live && item.contains(document.activeElement) && document.activeElement !== parts.toggle) parts.toggle.focus();
  parts.sync.hidden = !live;
  parts.disconnect.hidden = !live;
  if (run) {
    if (loaded) showRun(connection.id, run);
    if (ACTIVE.has(run.status)) followRun(connection.id, run.id);
  }
  showCustomerMeta();
}

/** The open customer's ids and the credits its live connections hold (as they change). */
function showCustomerMeta() {
  const customer = open.customer;
  if (!customer) return;
  let credits = 0;
  for (const connection of open.connections.values()) {
    if (connection.status !== 'DISCONNECTED') credits += connection.creditCost;
  }
  fill(
    $('#customer-meta'),
    h('code', {}, customer.id),
    customer.externalId ? ` · your id ${customer.externalId}` : '',
    ' · ',
    h('span', { testid: 'customer-credits' }, plural(credits, 'credit')),
    ' in use',
    open.partial ? ' by its first 100 connections' : '',
  );
}

/** Whether run `a` is newer than run `b` (the same run: whether `a` is further along). */
function newer(a, b) {
  if (a.id !== b.id) return a.queuedAt > b.queuedAt;
  return !ACTIVE.has(a.status) && ACTIVE.has(b.status);
}

function counts(run) {
  return h(
    'span',
    { class: 'counts', testid: 'sync-run-counts' },
    `${run.recordsAdded} added, ${run.recordsUpdated} updated, ${run.recordsDeleted} deleted`,
  );
}

async function syncNow(connectionId) {
  try {
    const { triggerSync: run } = await api.request(Q.triggerSync, { id: connectionId });
    followRun(connectionId, run.id);
  } catch (e) {
    showError($('[data-testid=connections-error]'), e);
  }
}

async function disconnect(connection) {
  const name = connection.label || connection.system.name;
  if (!(await confirmDialog(`Disconnect ${name}? Its token stops working and its credits return to the pool.`, 'Disconnect'))) return;
  try {
    const { disconnect: result } = await api.request(Q.disconnect, { id: connection.id });
    showConnection(result);
  } catch (e) {
    showError($('[data-testid=connections-error]'), e);
  }
}

/** Follows a sync run live until it ends. */
function followRun(connectionId, runId) {
  if (open.following.has(runId)) return;
  const stop = api.subscribe(Q.syncRun, { id: runId }, {
    next: ({ syncRun }) => updateRun(connectionId, syncRun),
    error: () => open.following.delete(runId),
    complete: () => open.following.delete(runId),
  });
  open.following.set(runId, stop);
}

function updateRun(connectionId, run) {
  const connection = open.connections.get(connectionId);
  if (!connection) return;
  if (!connection.lastSyncRun || connection.lastSyncRun.id === run.id || newer(run, connection.lastSyncRun)) {
    showConnection({ ...connection, lastSyncRun: run });
  } else if (open.cards.get(connectionId)?.loaded) {
    showRun(connectionId, run);
  }
}

// ---------------------------------------------------------------- sync history

async function toggleHistory(connectionId, button) {
  const entry = open.cards.get(connectionId);
  const opening = entry.history.hidden;
  entry.history.hidden = !opening;
  button.setAttribute('aria-expanded', String(opening));
  if (opening && !entry.loaded) {
    fill(entry.history, h('h4', {}, 'Sync history'), h('ol', { class: 'runs', testid: 'sync-history' }), h('p', { class: 'error', hidden: true }));
    await loadRuns(connectionId);
  }
}

async function loadRuns(connectionId) {
  const entry = open.cards.get(connectionId);
  const error = $('.error', entry.history);
  $('.more', entry.history)?.remove();
  try {
    const { connection } = await api.request(Q.syncRuns, { id: connectionId, after: entry.pageInfo?.endCursor ?? null });
    const page = connection.syncRuns;
    entry.pageInfo = page.pageInfo;
    entry.loaded = true;
    for (const run of page.nodes) showRun(connectionId, run);
    if (page.nodes.length === 0 && entry.runs.size === 0) {
      $('ol', entry.history).append(h('li', { class: 'muted empty' }, 'No sync runs.'));
    }
    if (page.pageInfo.hasNextPage) {
      entry.history.append(
        h('button', { type: 'button', class: 'more', testid: 'sync-history-more', onclick: () => loadRuns(connectionId) }, 'Load more runs'),
      );
    }
    showError(error, null);
  } catch (e) {
    showError(error, e);
  }
}

/** Shows a run in its connection's history: replaced in place, or added at the end (runs are oldest first). */
function showRun(connectionId, run) {
  const entry = open.cards.get(connectionId);
  const list = entry && $('ol', entry.history);
  if (!list) return;
  const existing = entry.runs.get(run.id);
  if (!existing && entry.pageInfo?.hasNextPage) return; // It belongs to a page not loaded yet.
  const row = runRow(run, existing);
  if (existing) existing.replaceWith(row);
  else {
    $('.empty', list)?.remove();
    list.append(row);
  }
  entry.runs.set(run.id, row);
}

function runRow(run, existing) {
  const wasOpen = existing?.querySelector('details')?.open ?? false;
  return h(
    'li',
    { testid: 'sync-run-row', dataset: { runId: run.id, status: run.status } },
    h(
      'details',
      { open: wasOpen },
      h(
        'summary',
        {},
        badge(run.status, 'sync-run-status'),
        ` ${humanize(run.kind)} · ${humanize(run.trigger)} · `,
        time(run.queuedAt),
        ' · ',
        counts(run),
      ),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { testid: 'sync-run-entities' },
          h('caption', { class: 'visually-hidden' }, 'Records per entity type'),
          h('thead', {}, h('tr', {}, ['Entity', 'Added', 'Updated', 'Deleted', 'Unchanged', 'Skipped', 'Rate limited'].map((t) => h('th', { scope: 'col' }, t)))),
          h(
            'tbody',
            {},
            run.entities.map((e) =>
              h(
                'tr',
                { dataset: { entity: e.entity } },
                h('th', { scope: 'row' }, humanize(e.entity)),
                [e.added, e.updated, e.deleted, e.unchanged, e.skipped, e.rateLimited].map((n) => h('td', {}, n)),
              ),
            ),
          ),
        ),
      ),
      h('p', { class: 'muted' }, 'Started ', time(run.startedAt), ', finished ', time(run.finishedAt)),
    ),
    run.error ? h('p', { class: 'reason', testid: 'sync-run-error' }, `${run.error.code}: ${run.error.message}`) : null,
  );
}

// ---------------------------------------------------------------- the connect dialog

let systems = null;

async function openConnect() {
  const dialog = $('#connect-dialog');
  const form = $('#connect-form');
  const error = $('[data-testid=connect-error]', form);
  form.reset();
  showError(error, null);
  fill($('#connect-customer'), `For ${open.customer.name}`);
  try {
    systems ??= (await api.request(Q.systems)).systems;
  } catch (e) {
    showError(error, e);
  }
  const select = $('#connect-system');
  fill(select, (systems ?? []).map((s) => h('option', { value: s.key }, `${s.name} (${s.vendor})`)));
  pickSystem();
  openDialog(dialog);
}

let readCredentials = () => ({});

function pickSystem() {
  const system = systems?.find((s) => s.key === $('#connect-system').value);
  if (!system) return;
  fill(
    $('#connect-deployment'),
    system.deployments.map((d) => h('option', { value: d }, humanize(d))),
  );
  showCost();
  readCredentials = credentialInputs($('#connect-credentials'), system.credentialFields, 'connect-credential');
}

function showCost() {
  const system = systems?.find((s) => s.key === $('#connect-system').value);
  if (!system) return;
  const cost = $('#connect-deployment').value === 'ON_PREMISES' ? system.onPremises : system.cloud;
  fill($('#connect-cost'), `Takes ${plural(cost, 'credit')} from the pool while connected.`);
}

async function submitConnect(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $('[data-testid=connect-error]', form);
  const interval = form.elements.syncIntervalMinutes.value;
  const credentials = readCredentials();
  if (!credentials) return; // Each wrong value says why under its input.
  const input = {
    customerId: open.customer.id,
    systemKey: form.elements.systemKey.value,
    deployment: form.elements.deployment.value,
    label: form.elements.label.value.trim() || null,
    credentials,
    syncIntervalMinutes: interval ? Number(interval) : null,
    validate: form.elements.validate.checked,
  };
  try {
    const { connect } = await busy(form, () => api.request(Q.connect, { input }));
    showError(error, null);
    $('#connect-dialog').close();
    showConnection(connect.connection);
    if (connect.token) {
      fill(
        $('#connection-token'),
        h('p', {}, 'Connected. The connection token, shown this once:'),
        h('code', { class: 'secret' }, connect.token),
        h('button', { type: 'button', onclick: (e) => (e.currentTarget.parentElement.hidden = true) }, 'Hide'),
      );
      $('#connection-token').hidden = false;
    }
  } catch (e) {
    showError(error, e);
  }
}

// ---------------------------------------------------------------- webhooks

async function loadEndpoints() {
  const error = $('[data-testid=webhooks-error]');
  try {
    const { webhookEndpoints } = await api.request(Q.endpoints);
    showError(error, null);
    fill(
      $('#webhook-list'),
      webhookEndpoints.nodes.length === 0 ? h('li', { class: 'muted' }, 'No endpoints yet.') : null,
      webhookEndpoints.nodes.map((endpoint) =>
        h(
          'li',
          { testid: 'webhook-endpoint-row', dataset: { endpointId: endpoint.id } },
          h(
            'button',
            {
              type: 'button',
              class: 'row-button',
              'aria-current': webhooks.endpoint?.id === endpoint.id ? 'true' : null,
              onclick: () => openEndpoint(endpoint),
            },
            h('span', { class: 'name' }, endpoint.url),
            badge(endpoint.enabled ? 'ENABLED' : 'DISABLED', 'webhook-endpoint-status'),
            h('span', { class: 'muted' }, endpoint.description ?? ''),
            endpoint.disabledReason ? h('span', { class: 'reason' }, endpoint.disabledReason) : null,
          ),
        ),
      ),
    );
  } catch (e) {
    showError(error, e);
  }
}

async function createEndpoint(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $('[data-testid=webhook-create-error]', form);
  const input = { url: form.elements.url.value.trim(), description: form.elements.description.value.trim() || null };
  try {
    const { createWebhookEndpoint } = await busy(form, () => api.request(Q.createEndpoint, { input }));
    showError(error, null);
    form.reset();
    fill(
      $('#webhook-secret'),
      h('p', {}, 'Endpoint added. Its signing secret, shown this once:'),
      h('code', { class: 'secret' }, createWebhookEndpoint.secret),
      h('button', { type: 'button', onclick: (e) => (e.currentTarget.parentElement.hidden = true) }, 'Hide'),
    );
    $('#webhook-secret').hidden = false;
    await loadEndpoints();
  } catch (e) {
    showError(error, e);
  }
}

function openEndpoint(endpoint) {
  webhooks.endpoint = endpoint;
  for (const row of document.querySelectorAll('[data-testid=webhook-endpoint-row] button')) {
    if (row.parentElement.dataset.endpointId === endpoint.id) row.setAttribute('aria-current', 'true');
    else row.removeAttribute('aria-current');
  }
  fill($('#deliveries-title'), 'Deliveries to ', h('span', { class: 'name' }, endpoint.url));
  fill($('#deliveries-meta'), 'Oldest first. Open a delivery to see its attempts.');
  $('#delivery-actions').hidden = false;
  loadDeliveries(true);
}

async function loadDeliveries(fresh) {
  const list = $('#delivery-list');
  const error = $('[data-testid=deliveries-error]');
  if (fresh) {
    webhooks.after = null;
    fill(list);
  }
  try {
    const { webhookEndpoint } = await api.request(Q.deliveries, {
      id: webhooks.endpoint.id,
      after: webhooks.after,
      status: $('#delivery-status-filter').value || null,
    });
    if (!webhookEndpoint) throw new ApiError('NOT_FOUND', 'The endpoint no longer exists');
    const page = webhookEndpoint.deliveries;
    showError(error, null);
    if (fresh && page.nodes.length === 0) list.append(h('li', { class: 'muted' }, 'No deliveries.'));
    for (const delivery of page.nodes) list.append(deliveryRow(delivery));
    webhooks.after = page.pageInfo.endCursor;
    $('#deliveries-more').hidden = !page.pageInfo.hasNextPage;
  } catch (e) {
    showError(error, e);
  }
}

function deliveryRow(delivery, expanded = false) {
  const details = h('div', { class: 'attempts', id: `attempts-${delivery.id}`, hidden: !expanded, testid: 'delivery-attempts' });
  const row = h(
    'li',
    { class: 'card', testid: 'delivery-row', dataset: { deliveryId: delivery.id, status: delivery.status } },
    h(
      'div',
      { class: 'card-head' },
      badge(delivery.status, 'delivery-status'),
      h('span', {}, plural(delivery.attemptCount, 'attempt')),
      time(delivery.createdAt),
    ),
    delivery.nextAttemptAt ? h('p', { class: 'muted' }, 'Next attempt ', time(delivery.nextAttemptAt)) : null,
    h(
      'div',
      { class: 'actions' },
      h(
        'button',
        {
          type: 'button',
          testid: 'delivery-attempts-toggle',
          'aria-expanded': String(expanded),
          'aria-controls': details.id,
          onclick: (event) => toggleAttempts(delivery.id, details, event.currentTarget),
        },
        'Attempts',
      ),
      h('button', { type: 'button', testid: 'delivery-redeliver', onclick: () => redeliver(delivery.id, row) }, 'Redeliver'),
    ),
    details,
  );
  if (expanded) loadAttempts(delivery.id, details);
  return row;
}

async function toggleAttempts(id, details, button) {
  const opening = details.hidden;
  details.hidden = !opening;
  button.setAttribute('aria-expanded', String(opening));
  if (opening) await loadAttempts(id, details);
}

async function loadAttempts(id, details) {
  try {
    const { delivery, carried } = await api.request(Q.delivery, { id }, { partial: true });
    if (!delivery) throw new ApiError('NOT_FOUND', 'The delivery no longer exists');
    fill(
      details,
      h(
        'p',
        { class: 'muted' },
        carried?.event ? ['Event ', h('code', {}, carried.event.id), ` (${humanize(carried.event.type)})`] : 'Its event is no longer stored.',
      ),
      delivery.attempts.length === 0
        ? h('p', { class: 'muted' }, 'Not attempted yet.')
        : h(
            'ol',
            { class: 'attempt-list' },
            delivery.attempts.map((attempt) =>
              h(
                'li',
                { testid: 'attempt-row' },
                time(attempt.attemptedAt),
                ' · ',
                h('strong', { testid: 'attempt-status' }, attempt.responseStatus ?? 'no answer'),
                ` · ${attempt.durationMs} ms`,
                attempt.error ? h('p', { class: 'reason' }, attempt.error) : null,
                attempt.responseBody ? h('pre', { class: 'body' }, attempt.responseBody) : null,
              ),
            ),
          ),
    );
    return delivery;
  } catch (e) {
    fill(details, h('p', { class: 'error', role: 'alert' }, e.message));
    return null;
  }
}

async function redeliver(id, row) {
  const error = $('[data-testid=deliveries-error]');
  try {
    const { redeliverWebhook } = await api.request(Q.redeliver, { id });
    showError(error, null);
    let current = deliveryRow(redeliverWebhook, true);
    row.replaceWith(current);
    // The worker sends it within moments; its new attempt is shown when it is recorded.
    for (let i = 0; i < 15; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      if (!current.isConnected) return;
      const delivery = await loadAttempts(id, $('[data-testid=delivery-attempts]', current));
      if (!delivery || delivery.status !== 'PENDING' || delivery.attemptCount > redeliverWebhook.attemptCount) {
        if (delivery) {
          const next = deliveryRow({ ...redeliverWebhook, ...delivery }, true);
          current.replaceWith(next);
          current = next;
        }
        return;
      }
    }
  } catch (e) {
    showError(error, e);
  }
}

async function testWebhook() {
  const error = $('[data-testid=deliveries-error]');
  try {
    await api.request(Q.testWebhook, { id: webhooks.endpoint.id });
    showError(error, null);
    await loadDeliveries(true);
  } catch (e) {
    showError(error, e);
  }
}

// ---------------------------------------------------------------- wiring

$('#signin-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  busy(form, () => signIn(form.elements.key.value.trim()));
});
$('#signout').addEventListener('click', () => signOut());
for (const button of document.querySelectorAll('#nav button')) {
  button.addEventListener('click', () => show(button.dataset.view));
}
$('#customer-create').addEventListener('submit', createCustomer);
$('#customer-search').addEventListener(
  'input',
  debounce((event) => {
    customers.search = event.target.value.trim();
    customers.cursors = [null];
    customers.page = 0;
    loadCustomers();
  }, 250),
);
$('#customers-next').addEventListener('click', () => {
  customers.page += 1;
  loadCustomers();
});
$('#customers-prev').addEventListener('click', () => {
  customers.page = Math.max(0, customers.page - 1);
  loadCustomers();
});
$('#connect-open').addEventListener('click', openConnect);
$('#connect-system').addEventListener('change', pickSystem);
$('#connect-deployment').addEventListener('change', showCost);
$('#connect-form').addEventListener('submit', submitConnect);
$('#connect-cancel').addEventListener('click', () => $('#connect-dialog').close());
$('#webhook-create').addEventListener('submit', createEndpoint);
$('#delivery-refresh').addEventListener('click', () => loadDeliveries(true));
$('#delivery-status-filter').addEventListener('change', () => loadDeliveries(true));
$('#deliveries-more').addEventListener('click', () => loadDeliveries(false));
$('#webhook-test').addEventListener('click', testWebhook);

const stored = session.get(KEY_STORAGE);
if (stored) busy($('#signin-form'), () => signIn(stored));
else $('#signin-key').focus();
