// Small DOM helpers shared by the console and the connect portal. Text is always set as
// text (never as HTML), so nothing the server or a user sends can become markup.

/**
 * Builds an element. `attrs`: `class`, `testid` (data-testid), `dataset`, `on<event>`
 * handlers, booleans (true sets an empty attribute, false/null/undefined sets nothing),
 * anything else as an attribute. Children: nodes, strings, null/false (skipped), arrays.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name === 'testid') element.dataset.testid = value;
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (name === 'value') element.value = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

function append(parent, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else parent.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export const $ = (selector, root = document) => root.querySelector(selector);

const CODE_HINTS = {
  UNAUTHENTICATED: 'Not signed in: the token is unknown, expired or revoked',
  FORBIDDEN: 'Not allowed with this token',
  NOT_FOUND: 'Not found',
  BAD_USER_INPUT: 'Please check the input',
  CONFLICT: 'Not possible in the current state',
  INSUFFICIENT_CREDITS: 'Not enough credits',
  CONNECTION_FAILED: 'The system refused the credentials or could not be reached',
  RATE_LIMITED: 'Too many requests',
  QUERY_TOO_COMPLEX: 'The request is too large',
  TIMEOUT: 'The server took too long',
  INTERNAL: 'A server error (its log has the details)',
  NETWORK: 'No connection to the server',
};

/** A sentence for people from an ApiError (or any error): what it means, then the server's words. */
function describeError(error) {
  const code = error?.code ?? 'INTERNAL';
  const hint = CODE_HINTS[code] ?? (code.startsWith('HTTP_') ? 'Unexpected answer from the server' : code);
  const retry = error?.extensions?.retryAfterSeconds;
  const wait = retry ? ` Try again in ${retry} s.` : '';
  const message = error?.message ? `: ${error.message.replace(/\.$/, '')}` : '';
  return `${hint}${message}.${wait} (${code})`;
}

/** Shows an error in an element (made a live alert), or clears it with `null`. */
export function showError(element, error) {
  element.setAttribute('role', 'alert');
  element.hidden = !error;
  element.textContent = error ? describeError(error) : '';
  if (error) element.dataset.code = error.code ?? 'INTERNAL';
  else delete element.dataset.code;
}

/** A status badge (connection, sync run or delivery status). */
export function badge(status, testid) {
  return h('span', { class: `badge badge-${String(status).toLowerCase()}`, testid, dataset: { status } }, humanize(status));
}

/** `1 credit`, `2 credits`. */
export function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

/** `AUTH_REQUIRED` → `auth required`. */
export function humanize(value) {
  return String(value).toLowerCase().replaceAll('_', ' ');
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** A `<time>` element for an RFC 3339 instant (or a dash for null). */
export function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  return h('time', { datetime: iso }, dateTime.format(new Date(iso)));
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** sessionStorage that fails quietly where it is not allowed (a third-party frame, a private mode). */
export const session = {
  get(key) {
    try {
      return sessionStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      sessionStorage.setItem(key, value);
    } catch {
      // Kept in memory only.
    }
  },
  remove(key) {
    try {
      sessionStorage.removeItem(key);
    } catch {
      // Nothing stored.
    }
  },
};

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

/**
 * Opens a `<dialog>` as a modal: the page behind it is inert, Tab stays inside it, Escape
 * closes it, and focus goes back to where it was when it closes.
 */
export function openDialog(dialog) {
  const opener = document.activeElement;
  if (!dialog.dataset.trapped) {
    dialog.dataset.trapped = 'yes';
    dialog.addEventListener('keydown', (event) => {
      if (event.key !== 'Tab') return;
      const items = [...dialog.querySelectorAll(FOCUSABLE)].filter((e) => e.offsetParent !== null);
      if (items.length === 0) return;
      const first = items[0];
      const last = items[items.length - 1];
      if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
    });
  }
  dialog.addEventListener('close', () => opener?.focus?.(), { once: true });
  dialog.showModal();
  (dialog.querySelector('[autofocus]') ?? dialog.querySelector(FOCUSABLE))?.focus();
}

/** Asks a yes/no question in a modal dialog; resolves to true when confirmed. */
export function confirmDialog(question, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h(
      'dialog',
      { class: 'dialog', testid: 'confirm-dialog', 'aria-labelledby': 'confirm-question' },
      h(
        'form',
        { method: 'dialog' },
        h('p', { id: 'confirm-question' }, question),
        h(
          'div',
          { class: 'actions' },
          h('button', { type: 'submit', value: 'no', testid: 'confirm-cancel', autofocus: true }, 'Cancel'),
          h('button', { type: 'submit', value: 'yes', class: 'danger', testid: 'confirm-accept' }, confirmLabel),
        ),
      ),
    );
    dialog.addEventListener('close', () => {
      resolve(dialog.returnValue === 'yes');
      dialog.remove();
    });
    document.body.append(dialog);
    openDialog(dialog);
  });
}

/** The input of one credential field, as its `kind` says (an unknown kind is typed as text). */
function credentialControl(field, id, describedBy) {
  const common = { id, name: field.name, required: field.required, 'aria-describedby': describedBy, testid: `credential-${field.name}` };
  switch (field.kind) {
    case 'INTEGER':
      return h('input', { ...common, type: 'number', step: '1', min: field.min, max: field.max, inputmode: 'numeric', autocomplete: 'off' });
    case 'ONE_OF':
      // An optional field may be left unset (the system's default); a required one starts
      // unchosen, so that the browser asks for a choice.
      return h(
        'select',
        common,
        h('option', { value: '' }, field.required ? 'Choose…' : 'Not set (the default)'),
        (field.choices ?? []).map((choice) => h('option', { value: choice }, choice)),
      );
    case 'OBJECT':
      return h('textarea', { ...common, rows: '4', spellcheck: 'false', autocomplete: 'off', placeholder: '{ }' });
    default:
      return h('input', {
        ...common,
        type: field.secret ? 'password' : 'text',
        autocomplete: field.secret ? 'new-password' : 'off',
        spellcheck: 'false',
      });
  }
}

const count = new Intl.NumberFormat();

/** What a field of `kind` takes, said under its input (null: its input says it). */
function credentialHint(field) {
  if (field.kind === 'INTEGER') {
    if (field.min !== null && field.max !== null) return `A whole number from ${count.format(field.min)} to ${count.format(field.max)}.`;
    return 'A whole number.';
  }
  if (field.kind === 'OBJECT') return 'A JSON object, such as {"key": "value"}.';
  return null;
}

/**
 * The value of a field's input as the JSON the server wants (`undefined`: left empty), or
 * throws an Error whose message says what is wrong with it.
 */
function credentialValue(field, raw) {
  if (raw.trim() === '') return undefined;
  if (field.kind === 'INTEGER') {
    const number = Number(raw);
    if (!Number.isInteger(number)) throw new Error('Must be a whole number.');
    return number;
  }
  if (field.kind === 'OBJECT') {
    let value;
    try {
      value = JSON.parse(raw);
    } catch (e) {
      throw new Error(`Not valid JSON: ${e.message}`);
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('Must be a JSON object ({ … }).');
    return value;
  }
  return raw;
}

/**
 * The inputs of a system's `credentialFields` into `container`, each as its `kind` says: a
 * text input (a password input for a secret), a number input within `min` and `max`, a
 * select of `choices`, or a textarea for a JSON object; `required` marked. Returns a function
 * that reads the form's values as the `credentials` object (empty optional fields left out,
 * numbers and objects as JSON ones), or returns null after showing, under each input whose
 * value is wrong, why (and focusing the first).
 */
export function credentialInputs(container, fields, idPrefix) {
  const errors = new Map();
  fill(
    container,
    fields.map((field) => {
      const id = `${idPrefix}-${field.name}`;
      const hint = credentialHint(field);
      const hintId = `${id}-hint`;
      const errorId = `${id}-error`;
      const error = h('p', { class: 'error', id: errorId, testid: `credential-${field.name}-error`, hidden: true });
      errors.set(field.name, error);
      const control = credentialControl(field, id, [hint ? hintId : null, errorId].filter(Boolean).join(' '));
      control.addEventListener('input', () => clearFieldError(control, error));
      return h(
        'div',
        { class: 'field' },
        h('label', { for: id }, field.label, field.required ? h('span', { class: 'required' }, ' (required)') : null),
        control,
        hint ? h('p', { class: 'hint', id: hintId }, hint) : null,
        error,
      );
    }),
  );
  return () => {
    const credentials = {};
    let firstWrong = null;
    for (const field of fields) {
      const control = container.querySelector(`[name="${CSS.escape(field.name)}"]`);
      const error = errors.get(field.name);
      try {
        const value = credentialValue(field, control.value);
        if (value !== undefined) credentials[field.name] = value;
        clearFieldError(control, error);
      } catch (e) {
        control.setAttribute('aria-invalid', 'true');
        error.textContent = e.message;
        error.hidden = false;
        firstWrong ??= control;
      }
    }
    if (firstWrong) {
      firstWrong.focus();
      return null;
    }
    return credentials;
  };
}

function clearFieldError(control, error) {
  control.removeAttribute('aria-invalid');
  error.hidden = true;
  error.textContent = '';
}

/** Disables a form's controls while `work` runs. */
export async function busy(form, work) {
  const controls = [...form.querySelectorAll('button, input, select, textarea')].filter((c) => !c.disabled);
  controls.forEach((c) => (c.disabled = true));
  form.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    controls.forEach((c) => (c.disabled = false));
    form.removeAttribute('aria-busy');
  }
}
