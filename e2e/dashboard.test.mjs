// End-to-end tests of the Runbase dashboard in a real headless Chromium (Debian's), driven by
// playwright-core, with Node's built-in test runner.
//
// Self-contained: the file starts a Stripe double (node:http) and a Runbase server on loopback
// ports chosen by the OS, with a fresh data directory, and stops both at the end.
//
//   RUNBASE_BIN      the server binary (default ../target/debug/runbase, relative to e2e/)
//   SCREENSHOT_DIR   where the screenshots go (default ../target/screenshots, relative to e2e/)
//   CHROMIUM_BIN     the browser (default /usr/bin/chromium)
//
// Run: cd e2e && npm install && node --test
//
// The scenarios share one account, one key and one server, so they run in order: each `it`
// builds on the ones before it.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const RUNBASE_BIN = resolve(HERE, process.env.RUNBASE_BIN || '../target/debug/runbase');
const SCREENSHOT_DIR = resolve(HERE, process.env.SCREENSHOT_DIR || '../target/screenshots');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const AXE_SOURCE = readFileSync(join(HERE, 'node_modules/axe-core/axe.min.js'), 'utf8');

const STRIPE_SECRET_KEY = 'sk_test_e2e';
const WEBHOOK_SECRET = `whsec_e2e_${randomBytes(12).toString('hex')}`;
const PASSWORD = 'correct horse battery staple';
const MODEL = 'runbase/placeholder-image';
const RUN_INPUT = { prompt: 'a lighthouse at dusk', aspect_ratio: '16:9' };

const DESKTOP = { name: 'desktop', viewport: { width: 1280, height: 800 } };
const PHONE = {
  name: 'phone',
  viewport: { width: 390, height: 844 },
  isMobile: true,
  hasTouch: true,
  deviceScaleFactor: 2,
};

// ---------------------------------------------------------------------------------------------
// Small helpers

const rand = (n = 8) => randomBytes(n).toString('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `timeout` for a promise, with a message saying what was awaited. */
function within(ms, promise, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

/** Millicents as the dashboard prints them (the same rules as `Millicents::usd` in Rust). */
function usd(millicents) {
  const sign = millicents < 0 ? '-' : '';
  const abs = Math.abs(millicents);
  const dollars = Math.floor(abs / 100_000);
  let frac = String(abs % 100_000).padStart(5, '0').replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  return `${sign}$${dollars}.${frac}`;
}

const microUsdToMillicents = (micro) => micro / 10; // 1 millicent = 10 micro-USD, exactly

/** "$0.06" → 6000 millicents. */
function parseUsd(text) {
  const m = /(-?)\$(\d+)\.(\d+)/.exec(text);
  assert.ok(m, `no dollar amount in ${JSON.stringify(text)}`);
  const frac = m[3].padEnd(5, '0').slice(0, 5);
  const v = Number(m[2]) * 100_000 + Number(frac);
  return m[1] ? -v : v;
}

// ---------------------------------------------------------------------------------------------
// The Stripe double: records Checkout Sessions, serves a stand-in hosted payment page.

function startStripeDouble() {
  const sessions = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url, 'http://double');
      const body = Buffer.concat(chunks).toString('utf8');
      const { port } = server.address();
      if (req.method === 'POST' && url.pathname === '/v1/checkout/sessions') {
        const auth = req.headers.authorization || '';
        if (auth !== `Bearer ${STRIPE_SECRET_KEY}`) {
          res.writeHead(401, { 'content-type': 'application/json' });
          res.end(JSON.stringify({
            error: { type: 'invalid_request_error', message: 'Invalid API Key provided' },
          }));
          return;
        }
        // The brackets of Stripe's nested fields may arrive percent-encoded: URLSearchParams
        // decodes them like Stripe does.
        const params = Object.fromEntries(new URLSearchParams(body));
        const id = `cs_test_${rand(12)}`;
        const session = {
          id,
          params,
          authorization: auth,
          idempotencyKey: req.headers['idempotency-key'] || null,
          contentType: req.headers['content-type'] || '',
          clientReferenceId: params.client_reference_id,
          amountCents: Number(params['line_items[0][price_data][unit_amount]']),
          currency: params['line_items[0][price_data][currency]'],
          successUrl: params.success_url,
          cancelUrl: params.cancel_url,
          url: `http://127.0.0.1:${port}/pay/${id}`,
        };
        sessions.push(session);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id, object: 'checkout.session', url: session.url }));
        return;
      }
      const pay = /^\/pay\/(cs_test_[0-9a-f]+)$/.exec(url.pathname);
      if (req.method === 'GET' && pay) {
        const s = sessions.find((x) => x.id === pay[1]);
        if (!s) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('no such checkout session');
          return;
        }
        const amount = `$${(s.amountCents / 100).toFixed(2)}`;
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test checkout</title></head>
<body><h1>Test checkout</h1><p id="amount">${amount} ${String(s.currency).toUpperCase()}</p>
<p id="session">${s.id}</p></body></html>`);
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { type: 'invalid_request_error', message: 'Unrecognized request URL' } }));
    });
  });
  return new Promise((resolveStart, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolveStart({
        server,
        sessions,
        base: `http://127.0.0.1:${port}`,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Runbase itself

/** The local OpenID provider (`oidc-provider`, e2e/oidc-provider.mjs): its issuer URL, how to
 * register Runbase's client, and how to choose the user its next login signs in. */
async function startIdp() {
  const child = spawn(process.execPath, [join(HERE, 'oidc-provider.mjs')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const next = () => new Promise((r) => lines.once('line', (l) => r(l.trim())));
  const first = await within(20_000, next(), 'the OpenID provider to listen');
  assert.match(first, /^OIDC_PROVIDER_URL=/);
  const url = first.slice('OIDC_PROVIDER_URL='.length);
  return {
    url,
    async register(clientId, secret, redirectUri) {
      child.stdin.write(`CLIENT ${clientId} ${secret} ${redirectUri}\n`);
      assert.equal(await within(10_000, next(), 'the provider READY'), 'READY');
    },
    async user(sub, email, verified) {
      const r = await fetch(`${url}/__test/user?sub=${sub}&email=${encodeURIComponent(email)}&email_verified=${verified}`);
      assert.equal(r.status, 204);
    },
    stop() {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

async function startRunbase(stripeBase, extraEnv = {}) {
  assert.ok(existsSync(RUNBASE_BIN), `no server binary at ${RUNBASE_BIN}: run \`cargo build -p runbase\` or set RUNBASE_BIN`);
  const dataDir = mkdtempSync(join(tmpdir(), 'runbase-e2e-'));
  const logPath = join(dataDir, 'server.log');
  const env = { ...process.env };
  delete env.RUST_LOG;
  // Only this file's settings: nothing from the caller's shell leaks into the server.
  for (const k of Object.keys(env)) if (k.startsWith('RUNBASE_') || k.startsWith('STRIPE_')) delete env[k];
  Object.assign(env, {
    RUNBASE_PAYMENTS__STRIPE__SECRET_KEY: STRIPE_SECRET_KEY,
    RUNBASE_PAYMENTS__STRIPE__WEBHOOK_SECRET: WEBHOOK_SECRET,
    RUNBASE_PAYMENTS__STRIPE__API_BASE: stripeBase,
    RUNBASE_RATE_LIMITS__RUNS__REQUESTS: '100000',
    // Each sign-up is two auth requests (sign-up, then log-in).
    RUNBASE_RATE_LIMITS__AUTH__REQUESTS: '20',
  }, extraEnv);
  const child = spawn(RUNBASE_BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = createWriteStream(logPath);
  child.stderr.pipe(log);
  const stdoutLines = [];
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  const lines = createInterface({ input: child.stdout });
  const listening = new Promise((resolveAddr, reject) => {
    lines.on('line', (line) => {
      stdoutLines.push(line);
      const m = /^Runbase listening on (http:\/\/\S+)$/.exec(line.trim());
      if (m) resolveAddr(m[1]);
    });
    child.once('error', reject);
    exited.then(({ code, signal }) => reject(new Error(`runbase exited early (code ${code}, signal ${signal})`)));
  });
  const handle = { child, dataDir, logPath, stdoutLines, exited, log };
  try {
    handle.base = await within(20_000, listening, 'the "Runbase listening on" line');
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await fetch(`${handle.base}/health`).catch((e) => e);
      if (r.status === 200) break;
      if (Date.now() > deadline) throw new Error(`GET /health never answered 200 (last: ${r.status ?? r})`);
      await sleep(100);
    }
  } catch (e) {
    stopRunbase(handle);
    await sleep(200);
    printServerLog(handle);
    throw e;
  }
  return handle;
}

function stopRunbase(handle) {
  if (handle?.child && handle.child.exitCode === null && handle.child.signalCode === null) {
    // The child only, by its pid; never a process group.
    handle.child.kill('SIGKILL');
  }
}

function printServerLog(handle) {
  if (!handle?.logPath || !existsSync(handle.logPath)) return;
  const text = readFileSync(handle.logPath, 'utf8');
  const tail = text.length > 20_000 ? `…${text.slice(-20_000)}` : text;
  console.error(`\n----- runbase stdout -----\n${handle.stdoutLines.join('\n')}`);
  console.error(`----- runbase stderr (${handle.logPath}) -----\n${tail}\n----- end of server log -----`);
}

// ---------------------------------------------------------------------------------------------
// Shared state

let stripe;
let rb;
let browser;
let base;
let anyFailed = false;

/** Everything the scenarios pass on to each other. */
const S = {
  admin: { email: `admin-${rand(4)}@e2e.test`, context: null, page: null, accountId: null },
  other: { email: `other-${rand(4)}@e2e.test`, context: null, page: null },
  checkout: null,
  key: null, // { id, secret, prefix }
  runs: [], // runs created with the key: { id, costUsd, status }
  firstRun: null,
};

/** Wraps a test body so that a failure prints the server's log once, at the end. */
function guarded(fn) {
  return async (t) => {
    try {
      await fn(t);
    } catch (e) {
      anyFailed = true;
      throw e;
    }
  };
}

/** A response's status, its body as text, and the body as JSON when it is JSON (else null). */
async function readAnswer(r) {
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: the text stays for the messages
  }
  return { status: r.status, json, text };
}

async function api(method, path, { key, body, headers = {} } = {}) {
  const h = { ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  if (body !== undefined) h['content-type'] = 'application/json';
  const r = await fetch(`${base}${path}`, {
    method,
    headers: h,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return readAnswer(r);
}

/** Creates a run with the key and checks the answer's status (and error code). */
async function createRun(key, expectStatus, expectCode) {
  const r = await api('POST', '/api/v1/runs', { key, body: { model: MODEL, input: RUN_INPUT } });
  assert.equal(r.status, expectStatus, `POST /api/v1/runs: expected ${expectStatus}, got ${r.status}: ${r.text}`);
  if (expectCode) assert.equal(r.json?.error?.code, expectCode, `error code of ${r.text}`);
  if (r.status === 201) {
    assert.match(r.json.id, /^run_/);
    S.runs.push(r.json);
  }
  return r.json;
}

async function waitForRun(key, id, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    const r = await api('GET', `/api/v1/runs/${id}`, { key });
    assert.equal(r.status, 200, `GET /api/v1/runs/${id}: ${r.text}`);
    last = r.json;
    if (last.status === 'succeeded') return last;
    assert.ok(!['failed', 'canceled'].includes(last.status), `run ${id} ended ${last.status}: ${r.text}`);
    await sleep(250);
  }
  assert.fail(`run ${id} did not succeed within ${ms} ms (last: ${JSON.stringify(last)})`);
}

/** A Stripe-signed webhook delivery. */
async function deliverWebhook(event, { secret = WEBHOOK_SECRET, t = Math.floor(Date.now() / 1000) } = {}) {
  const raw = JSON.stringify(event);
  const v1 = createHmac('sha256', secret).update(`${t}.${raw}`).digest('hex');
  const r = await fetch(`${base}/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'stripe-signature': `t=${t},v1=${v1}` },
    body: raw,
    signal: AbortSignal.timeout(10_000),
  });
  return readAnswer(r);
}

function completedEvent(checkout, accountId) {
  return {
    id: `evt_${rand(12)}`,
    object: 'event',
    type: 'checkout.session.completed',
    data: {
      object: {
        id: checkout.id,
        object: 'checkout.session',
        payment_status: 'paid',
        amount_total: checkout.amountCents,
        currency: 'usd',
        client_reference_id: accountId,
        metadata: { account_id: accountId },
      },
    },
  };
}

async function newContext(options = DESKTOP, storageState) {
  const { name: _name, ...rest } = options;
  const context = await browser.newContext({ ...rest, storageState, baseURL: base });
  context.setDefaultTimeout(10_000);
  context.setDefaultNavigationTimeout(15_000);
  return context;
}

/** Navigates and checks the status. */
async function open(page, path, status = 200) {
  const resp = await page.goto(path, { waitUntil: 'load' });
  assert.ok(resp, `no response for ${path}`);
  assert.equal(resp.status(), status, `GET ${path}: expected ${status}, got ${resp.status()} (${page.url()})`);
  return resp;
}

/** Signs up, then logs in: a sign-up answers the same whether or not the email was taken, so
 * it leads to the log-in form (with a notice) rather than logging in. */
async function signUp(page, email) {
  await open(page, '/signup');
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/login' && u.searchParams.get('signed_up') === '1'),
    page.click('section.auth-card form button[type=submit]'),
  ]);
  await page.waitForSelector('.notice.ok');
  await page.fill('#email', email);
  await page.fill('#password', PASSWORD);
  await Promise.all([
    page.waitForURL(`${base}/`),
    page.click('section.auth-card form button[type=submit]'),
  ]);
  await page.waitForSelector('h1:text-is("Dashboard")');
}

async function session(page) {
  return page.evaluate(async () => {
    const r = await fetch('/auth/session', { headers: { accept: 'application/json' } });
    return { status: r.status, body: await r.json() };
  });
}

/** Text of the <dd> after the <dt> with `label` in the page's `dl.facts`. */
async function fact(page, label) {
  return page
    .locator('dl.facts dt', { hasText: label })
    .locator('xpath=following-sibling::dd[1]')
    .innerText();
}

async function keyPage(page) {
  assert.ok(S.key, 'needs the key created by an earlier test');
  await open(page, `/settings/api-keys/${S.key.id}`);
}

/** Submits the key's settings form and waits for "Saved.". */
async function saveKeySettings(page, fields) {
  await keyPage(page);
  for (const [sel, value] of Object.entries(fields)) await page.fill(sel, value);
  await Promise.all([
    page.waitForURL(/\?saved=1$/),
    page.click('form.grid button[type=submit]:text-is("Save")'),
  ]);
  await page.waitForSelector('.notice.ok:text("Saved.")');
}

/** Why a page is wider than its viewport: the elements sticking out, widest first. */
async function overflowReport(page, viewportWidth) {
  return page.evaluate((vw) => {
    const doc = document.documentElement;
    const limit = Math.min(window.innerWidth, vw) + 1;
    const result = { scrollWidth: doc.scrollWidth, innerWidth: window.innerWidth, clientWidth: doc.clientWidth, offenders: [] };
    if (doc.scrollWidth <= limit) return result;
    const path = (el) => {
      const parts = [];
      for (let e = el; e && e !== document.body && parts.length < 6; e = e.parentElement) {
        let s = e.tagName.toLowerCase();
        if (e.id) s += `#${e.id}`;
        else if (e.classList.length) s += `.${[...e.classList].join('.')}`;
        parts.unshift(s);
      }
      return parts.join(' > ');
    };
    const all = [...document.body.querySelectorAll('*')];
    const sticking = all
      .map((el) => ({ el, r: el.getBoundingClientRect() }))
      .filter(({ r }) => r.width > 0 && r.right > limit);
    // Only the outermost ones: an element whose parent sticks out too says nothing new.
    const set = new Set(sticking.map((x) => x.el));
    for (const { el, r } of sticking) {
      if (el.parentElement && set.has(el.parentElement)) continue;
      result.offenders.push({
        element: path(el),
        width: Math.round(r.width),
        right: Math.round(r.right),
        text: (el.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 60),
      });
    }
    result.offenders.sort((a, b) => b.right - a.right);
    result.offenders = result.offenders.slice(0, 5);
    return result;
  }, viewportWidth);
}

/** Makes lazy images load and waits for every image on the page. */
async function settleImages(page) {
  await page.evaluate(async () => {
    const imgs = [...document.images];
    for (const img of imgs) img.loading = 'eager';
    await Promise.all(
      imgs.map((img) => (img.complete ? null : new Promise((r) => {
        img.addEventListener('load', r, { once: true });
        img.addEventListener('error', r, { once: true });
      }))),
    );
  });
}

/** Every page of the dashboard, as the screenshot and accessibility tests visit them. */
function dashboardPages() {
  return [
    { name: 'login', path: '/login', auth: false },
    { name: 'signup', path: '/signup', auth: false },
    { name: 'dashboard', path: '/' },
    { name: 'api-keys', path: '/settings/api-keys', createKey: true },
    { name: 'api-key', path: `/settings/api-keys/${S.key.id}` },
    { name: 'credits', path: '/settings/credits' },
    { name: 'password', path: '/settings/password' },
    { name: 'runs', path: '/runs' },
    { name: 'run', path: `/runs/${S.firstRun.id}` },
    { name: 'models', path: '/models' },
    { name: 'model-nano-banana-2', path: '/models/google/nano-banana-2' },
    { name: 'docs-authentication', path: '/docs/authentication' },
    { name: 'docs-rate-limits', path: '/docs/rate-limits' },
    { name: 'docs-error-codes', path: '/docs/error-codes' },
    { name: 'docs-runs', path: '/docs/runs' },
    { name: 'not-found', path: '/no-such-page', status: 404 },
    { name: 'model-landing-seedance', path: '/bytedance/seedance-1.5-pro' },
    { name: 'model-logged-out', path: '/google/nano-banana-2', auth: false },
    // Last: the switch's cookie stays in the context.
    { name: 'model-ja', path: '/language?lang=ja&next=%2Fmodels%2Fgoogle%2Fnano-banana-2', auth: false },
  ];
}

/** axe-core's serious and critical WCAG 2.1 A/AA findings on the page, one line each. */
async function accessibilityViolations(page) {
  await page.addScriptTag({ content: AXE_SOURCE });
  return page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    });
    return result.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.help}; at ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
  });
}

// ---------------------------------------------------------------------------------------------

describe('Runbase dashboard end to end', { timeout: 240_000 }, () => {
  before(async () => {
    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    stripe = await startStripeDouble();
    rb = await startRunbase(stripe.base);
    base = rb.base;
    process.once('exit', () => stopRunbase(rb));
    browser = await within(30_000, chromium.launch({
      executablePath: CHROMIUM_BIN,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
      timeout: 30_000,
    }), 'launching Chromium');
  });

  after(async () => {
    await within(10_000, browser?.close() ?? Promise.resolve(), 'closing Chromium').catch((e) => console.error(e));
    stopRunbase(rb);
    if (rb) await within(5_000, rb.exited, 'the server to exit').catch((e) => console.error(e));
    rb?.log.end();
    await stripe?.close();
    if (anyFailed) {
      await sleep(100);
      printServerLog(rb);
    }
  });

  it('1. signs up; the first account is an administrator', { timeout: 30_000 }, guarded(async () => {
    const a = S.admin;
    a.context = await newContext(DESKTOP);
    await a.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
    a.page = await a.context.newPage();
    a.page.on('dialog', (d) => d.accept());

    // Logged out, the dashboard sends the browser to the log-in page.
    await open(a.page, '/');
    assert.equal(new URL(a.page.url()).pathname, '/login');

    await signUp(a.page, a.email);
    assert.equal(a.page.url(), `${base}/`);
    assert.equal(await a.page.locator('header .who a.email').innerText(), a.email);

    const s = await session(a.page);
    assert.equal(s.status, 200);
    assert.equal(s.body.account.email, a.email);
    assert.equal(s.body.account.admin, true, 'the first account is an administrator');
    a.accountId = s.body.account.id;
    assert.ok(a.accountId, 'the session names the account');

    await open(a.page, '/settings/password');
    await a.page.waitForSelector('.badge.admin:text-is("administrator")');

    // A short password is refused with the form shown again.
    const anon = await newContext(DESKTOP);
    try {
      const p = await anon.newPage();
      await open(p, '/signup');
      await p.fill('#email', `short-${rand(3)}@e2e.test`);
      await p.fill('#password', 'short');
      // Skip the browser's own minlength check to see the server's answer.
      await p.evaluate(() => document.querySelector('#password').removeAttribute('minlength'));
      const [resp] = await Promise.all([
        p.waitForResponse((r) => r.url() === `${base}/signup` && r.request().method() === 'POST'),
        p.click('section.auth-card form button[type=submit]'),
      ]);
      assert.equal(resp.status(), 400, 'a short password is refused');
      await p.waitForSelector('.notice.error');
    } finally {
      await anon.close();
    }
  }));

  it('2. tops up $25.00 through the Stripe double and a signed webhook, exactly once', { timeout: 30_000 }, guarded(async () => {
    const { page, accountId } = S.admin;
    assert.ok(page, 'needs the account from test 1');
    await open(page, '/settings/credits');
    assert.equal((await page.locator('#balance').innerText()).trim(), '$0.00');
    assert.equal(await page.locator('#amount_cents').inputValue(), '2500', 'the default top-up is $25.00');

    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(`${stripe.base}/pay/`)),
      page.click('button:text-is("Pay with card")'),
    ]);
    assert.equal(await page.title(), 'Test checkout');
    assert.match(await page.locator('#amount').innerText(), /^\$25\.00 USD$/);

    assert.equal(stripe.sessions.length, 1, 'exactly one checkout session was created');
    const checkout = stripe.sessions[0];
    S.checkout = checkout;
    assert.equal(checkout.authorization, `Bearer ${STRIPE_SECRET_KEY}`);
    assert.match(checkout.contentType, /application\/x-www-form-urlencoded/);
    assert.equal(page.url(), checkout.url);
    assert.equal(checkout.clientReferenceId, accountId);
    assert.equal(checkout.params['metadata[account_id]'], accountId);
    assert.equal(checkout.amountCents, 2500);
    assert.equal(checkout.currency, 'usd');
    assert.equal(checkout.params.mode, 'payment');
    assert.ok(checkout.successUrl?.startsWith(`${base}/settings/credits`), `success_url ${checkout.successUrl}`);
    assert.ok(checkout.cancelUrl?.startsWith(`${base}/settings/credits`), `cancel_url ${checkout.cancelUrl}`);
    assert.ok(checkout.idempotencyKey, 'the create call carries an Idempotency-Key');

    // Nothing is credited before the webhook.
    await open(page, '/settings/credits');
    assert.equal((await page.locator('#balance').innerText()).trim(), '$0.00');

    // A bad signature is refused and credits nothing.
    const event = completedEvent(checkout, accountId);
    const forged = await deliverWebhook(event, { secret: 'whsec_wrong' });
    assert.equal(forged.status, 400, forged.text);
    assert.equal(forged.json?.error?.code, 'invalid_signature');
    const stale = await deliverWebhook(event, { t: Math.floor(Date.now() / 1000) - 3600 });
    assert.equal(stale.status, 400, `a signature an hour old is a replay: ${stale.text}`);
    assert.equal(stale.json?.error?.code, 'invalid_signature');

    const first = await deliverWebhook(event);
    assert.equal(first.status, 200, first.text);
    assert.equal(first.json?.outcome, 'credited', first.text);

    await open(page, '/settings/credits');
    assert.equal((await page.locator('#balance').innerText()).trim(), '$25.00');
    const topups = page.locator('.table-wrap tbody tr', { hasText: 'Top-up' });
    assert.equal(await topups.count(), 1, 'one Top-up line');
    const cells = await topups.first().locator('td').allInnerTexts();
    assert.equal(cells[3].trim(), '$25.00', `amount cell of ${cells.join(' | ')}`);
    assert.equal(cells[4].trim(), '$25.00', `balance-after cell of ${cells.join(' | ')}`);

    // The same event again, and the same session under a new event id: no second credit.
    const again = await deliverWebhook(event);
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json?.outcome, 'already_credited', again.text);
    const sameSession = await deliverWebhook(completedEvent(checkout, accountId));
    assert.equal(sameSession.status, 200, sameSession.text);
    assert.equal(sameSession.json?.outcome, 'already_credited', sameSession.text);

    await open(page, '/settings/credits');
    assert.equal((await page.locator('#balance').innerText()).trim(), '$25.00');
    assert.equal(await page.locator('.table-wrap tbody tr', { hasText: 'Top-up' }).count(), 1);
    const s = await session(page);
    assert.equal(s.body.account.balanceUsd, 25_000_000);

    // The return pages of the checkout show their notices.
    await open(page, '/settings/credits?topup=success');
    await page.waitForSelector('.notice.ok');
    await open(page, '/settings/credits?topup=canceled');
    await page.waitForSelector('.notice.error');
  }));

  it('3. creates a live key whose secret is shown once', { timeout: 30_000 }, guarded(async () => {
    const { page } = S.admin;
    assert.ok(page, 'needs the account from test 1');
    await open(page, '/settings/api-keys');
    await page.fill('#name', 'e2e');
    assert.equal(await page.locator('#test').isChecked(), false, 'live is the default');
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${base}/settings/api-keys` && r.request().method() === 'POST'),
      page.click('button[type=submit]:text-is("Create key")'),
    ]);
    // Redirect after the post (a reload cannot create another key); the page it leads to
    // shows the secret once.
    assert.equal(resp.status(), 303);
    await page.waitForURL((u) => u.pathname === '/settings/api-keys' && u.searchParams.has('created'));
    const secretEl = page.locator('#new-key-secret');
    await secretEl.waitFor();
    const secret = (await secretEl.innerText()).trim();
    assert.match(secret, /^sk-/, 'the secret starts with sk-');
    assert.doesNotMatch(secret, /^sk-test-/, 'a live key');
    assert.ok(secret.length >= 24, `a long secret: ${secret}`);

    // The Copy button puts the secret on the clipboard.
    const copy = page.locator('button.copy[data-copy="#new-key-secret"]');
    assert.equal((await copy.innerText()).trim(), 'Copy');
    await copy.click();
    await page.waitForFunction(() => document.querySelector('button.copy').textContent === 'Copied');
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);

    const row = page.locator('.table-wrap tbody tr', { hasText: 'e2e' });
    assert.equal(await row.count(), 1);
    const href = await row.locator('a').first().getAttribute('href');
    const m = /^\/settings\/api-keys\/([^/?#]+)$/.exec(href);
    assert.ok(m, `key link ${href}`);
    const prefix = (await row.locator('td code').innerText()).replace('…', '');
    assert.ok(secret.startsWith(prefix), `the listed prefix ${prefix} begins the secret`);
    S.key = { id: m[1], secret, prefix };

    // After a reload the secret is nowhere in the page.
    await open(page, '/settings/api-keys');
    const html = await page.content();
    assert.ok(!html.includes(secret), 'the secret is not in the page after a reload');
    assert.equal(await page.locator('#new-key-secret').count(), 0);
    assert.ok(html.includes(prefix), 'the prefix is still listed');
    await open(page, `/settings/api-keys/${S.key.id}`);
    assert.ok(!(await page.content()).includes(secret), 'nor on the key page');
    assert.match(await fact(page, 'Status'), /active/);
  }));

  it('4. runs a model with the key and shows the run in the dashboard', { timeout: 60_000 }, guarded(async () => {
    const { page } = S.admin;
    assert.ok(S.key, 'needs the key from test 3');
    const created = await createRun(S.key.secret, 201);
    assert.equal(created.model, MODEL);
    const run = await waitForRun(S.key.secret, created.id);
    S.firstRun = run;
    assert.ok(Array.isArray(run.output?.urls) && run.output.urls.length > 0, `output urls: ${JSON.stringify(run.output)}`);
    assert.ok(Number.isInteger(run.costUsd) && run.costUsd > 0, 'a live run costs a whole number of micro-USD');
    const cost = microUsdToMillicents(run.costUsd);

    await open(page, '/runs');
    await page.locator(`a[href="/runs/${run.id}"]`).waitFor();
    const listRow = page.locator('.table-wrap tbody tr', { hasText: run.id });
    assert.match(await listRow.innerText(), /succeeded/);

    await open(page, `/runs/${run.id}`);
    assert.match(await page.locator('#run-status').innerText(), /succeeded/);
    assert.equal((await fact(page, 'Cost')).trim(), usd(cost));
    const img = page.locator('.outputs img').first();
    await img.scrollIntoViewIfNeeded();
    await page.waitForFunction(() => {
      const i = document.querySelector('.outputs img');
      return i && i.complete;
    });
    const size = await img.evaluate((i) => ({ w: i.naturalWidth, h: i.naturalHeight }));
    assert.ok(size.w > 0 && size.h > 0, `the output image loaded (${size.w}×${size.h})`);
    assert.ok(size.w > size.h, `16:9 is wider than tall (${size.w}×${size.h})`);
    const charge = page.locator('.table-wrap tbody tr', { hasText: 'Run charge' });
    assert.equal(await charge.count(), 1, 'the run page shows its charge');
    const chargeCells = await charge.locator('td').allInnerTexts();
    assert.equal(chargeCells[3].trim(), usd(-cost), `charge row ${chargeCells.join(' | ')}`);

    await open(page, '/settings/credits');
    assert.equal((await page.locator('#balance').innerText()).trim(), usd(2_500_000 - cost));
    const creditCharge = page.locator('.table-wrap tbody tr', { hasText: run.id });
    assert.equal(await creditCharge.count(), 1, 'the credits page shows the charge');
    assert.match(await creditCharge.innerText(), /Run charge/);
    assert.ok((await creditCharge.innerText()).includes(usd(-cost)));

    await open(page, '/');
    assert.ok(await page.locator(`a[href="/runs/${run.id}"]`).count() >= 1, 'the dashboard lists the recent run');
  }));

  it('5. a disabled key is refused with 401 and works again once enabled', { timeout: 60_000 }, guarded(async () => {
    const { page } = S.admin;
    await keyPage(page);
    await Promise.all([
      page.waitForURL(/\?saved=1$/),
      page.click('button[type=submit]:text-is("Disable key")'),
    ]);
    assert.match(await fact(page, 'Status'), /disabled/);
    await createRun(S.key.secret, 401, 'invalid_api_key');
    const get = await api('GET', `/api/v1/runs/${S.firstRun.id}`, { key: S.key.secret });
    assert.equal(get.status, 401, get.text);

    await Promise.all([
      page.waitForURL(/\?saved=1$/),
      page.click('button[type=submit]:text-is("Enable key")'),
    ]);
    assert.match(await fact(page, 'Status'), /active/);
    const run = await createRun(S.key.secret, 201);
    await waitForRun(S.key.secret, run.id);
  }));

  it('6. the IP allowlist refuses other addresses with 403', { timeout: 60_000 }, guarded(async () => {
    const { page } = S.admin;
    await saveKeySettings(page, { '#allow_ips': '203.0.113.7' });
    assert.equal(await page.locator('#allow_ips').inputValue(), '203.0.113.7');
    await createRun(S.key.secret, 403, 'ip_not_allowed');

    await saveKeySettings(page, { '#allow_ips': '127.0.0.1' });
    assert.equal(await page.locator('#allow_ips').inputValue(), '127.0.0.1');
    const run = await createRun(S.key.secret, 201);
    await waitForRun(S.key.secret, run.id);

    // An invalid entry is refused on the page and changes nothing.
    await keyPage(page);
    await page.fill('#allow_ips', 'not-an-address');
    const [resp] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${base}/settings/api-keys/${S.key.id}` && r.request().method() === 'POST'),
      page.click('form.grid button[type=submit]:text-is("Save")'),
    ]);
    assert.equal(resp.status(), 400);
    await page.waitForSelector('.notice.error');
    await keyPage(page);
    assert.equal(await page.locator('#allow_ips').inputValue(), '127.0.0.1');
  }));

  it('7. a spend limit equal to the spend so far refuses the next run with 403', { timeout: 60_000 }, guarded(async () => {
    const { page } = S.admin;
    await keyPage(page);
    const spendText = await fact(page, 'Spend / limit');
    assert.match(spendText, /no limit/);
    const spent = parseUsd(spendText);
    // Every run so far succeeded, so the key has spent exactly their costs.
    const expected = S.runs.reduce((sum, r) => sum + microUsdToMillicents(r.costUsd), 0);
    assert.equal(S.runs.length, 3, 'three runs were made with the key so far');
    assert.equal(spent, expected, `the page's spend ${spendText} is the sum of the runs' costs`);
    assert.equal(spent % 1000, 0, 'a whole number of cents');
    const limitCents = spent / 1000;

    await saveKeySettings(page, { '#spend_limit_cents': String(limitCents) });
    assert.equal(await page.locator('#spend_limit_cents').inputValue(), String(limitCents));
    assert.equal((await fact(page, 'Spend / limit')).trim(), `${usd(spent)} / ${usd(spent)}`);
    await createRun(S.key.secret, 403, 'api_key_spend_limit_exceeded');

    await saveKeySettings(page, { '#spend_limit_cents': '' });
    assert.match(await fact(page, 'Spend / limit'), /no limit/);
    const run = await createRun(S.key.secret, 201);
    await waitForRun(S.key.secret, run.id);
  }));

  it("8. a second account sees none of the first account's runs, keys or ledger", { timeout: 30_000 }, guarded(async () => {
    assert.ok(S.key && S.firstRun, 'needs the key and run of earlier tests');
    const o = S.other;
    o.context = await newContext(DESKTOP);
    o.page = await o.context.newPage();
    await signUp(o.page, o.email);
    const s = await session(o.page);
    assert.equal(s.body.account.admin, false, 'only the first account is an administrator');
    assert.notEqual(s.body.account.id, S.admin.accountId);

    await open(o.page, `/runs/${S.firstRun.id}`, 404);
    assert.ok(!(await o.page.content()).includes('lighthouse'), 'no trace of the run');
    await open(o.page, `/settings/api-keys/${S.key.id}`, 404);
    for (const action of ['disable', 'delete']) {
      // Posting to another account's key is refused too (with this session's own CSRF token).
      const status = await o.page.evaluate(async ({ id, action: a, csrf }) => {
        const r = await fetch(`/settings/api-keys/${id}/${a}`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ csrf_token: csrf, confirm: 'yes' }),
          redirect: 'manual',
        });
        return r.status;
      }, { id: S.key.id, action, csrf: s.body.csrfToken });
      assert.equal(status, 404, `POST ${action} on another account's key`);
    }
    // The key still works for its owner.
    const check = await api('GET', `/api/v1/runs/${S.firstRun.id}`, { key: S.key.secret });
    assert.equal(check.status, 200, check.text);

    await open(o.page, '/settings/credits');
    assert.equal((await o.page.locator('#balance').innerText()).trim(), '$0.00');
    const html = await o.page.content();
    assert.ok(!html.includes('Top-up'), "no Top-up line of the first account");
    assert.ok(!html.includes('Run charge'), "no run charge of the first account");
    for (const r of S.runs) assert.ok(!html.includes(r.id), `no mention of ${r.id}`);
    await o.page.waitForSelector('td:text("No ledger entries yet.")');
    assert.equal(await o.page.locator('text=Grant credits').count(), 0, 'no grant form for a non-admin');

    await open(o.page, '/runs');
    for (const r of S.runs) assert.equal(await o.page.locator(`a[href="/runs/${r.id}"]`).count(), 0);
    await open(o.page, '/settings/api-keys');
    assert.equal(await o.page.locator('.table-wrap tbody tr', { hasText: 'e2e' }).count(), 0);
    await o.context.close();
  }));

  it('8b. runs an image model in the Playground in test mode, then its copied curl with a real key', { timeout: 90_000 }, guarded(async () => {
    const { page } = S.admin;
    await open(page, '/google/nano-banana-2');
    // No provider here: test mode is on, and the price is the API's for the chosen options.
    assert.ok(await page.isChecked('#pg-test'), 'test mode is on for a model only test mode can run');
    await page.click('a.example-fill:has-text("Wide landscape")');
    assert.equal(await page.inputValue('#pg-aspect_ratio'), '21:9', 'the example filled the form');
    assert.equal(await page.inputValue('#pg-resolution'), '4K');
    assert.match(await page.inputValue('#pg-prompt'), /fjord/);
    await page.waitForFunction(() => document.querySelector('#pg-price').textContent.includes('$0.13'));
    await page.fill('#pg-prompt', 'a lighthouse at dusk');
    await page.selectOption('#pg-aspect_ratio', '16:9');
    await page.selectOption('#pg-resolution', '1K');
    await page.waitForFunction(() => document.querySelector('#pg-price').textContent.includes('$0.06'));
    const balanceBefore = (await session(page)).body.account.balanceUsd;
    assert.ok(Number.isInteger(balanceBefore), 'the session shows the balance');

    // Upload a reference image: the Playground stores it with the session (the type is sniffed
    // from the bytes: the name says .txt), previews it, and the run names its URL.
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
    await page.setInputFiles('.pg-urls[data-field="image_urls"] .pg-upload input[type=file]', { name: 'reference.txt', mimeType: 'text/plain', buffer: png });
    await page.waitForFunction(() => [...document.querySelectorAll('.pg-urls[data-field="image_urls"] .pg-url-list input')]
      .some((i) => i.value.includes('/files/upl_')), null, { timeout: 15_000 });
    const uploaded = await page.evaluate(() => [...document.querySelectorAll('.pg-urls[data-field="image_urls"] .pg-url-list input')]
      .map((i) => i.value).find((v) => v.includes('/files/upl_')));
    await page.waitForFunction(() => {
      const i = document.querySelector('.pg-urls[data-field="image_urls"] img.pg-preview');
      return i && i.complete && i.naturalWidth === 1;
    });
    const served = await fetch(uploaded);
    assert.equal(served.status, 200, 'the upload is served');
    assert.equal(served.headers.get('content-type'), 'image/png');

    // Run: the status updates live and the image shows inline, with a download link.
    await page.click('#pg-run');
    const img = page.locator('#pg-output img').first();
    await img.waitFor({ timeout: 30_000 });
    await page.waitForFunction(() => {
      const i = document.querySelector('#pg-output img');
      return i && i.complete && i.naturalWidth > 0;
    });
    const size = await img.evaluate((i) => ({ w: i.naturalWidth, h: i.naturalHeight }));
    assert.ok(size.w > size.h, `16:9 is wider than tall (${size.w}×${size.h})`);
    assert.match(await page.locator('#pg-status').innerText(), /succeeded/);
    assert.equal(await page.locator('#pg-output a[download]').count(), 1);
    assert.equal(await page.locator('#pg-recent li').count(), 1, 'listed beside the form');
    const runId = (await page.locator('#pg-recent li code').first().innerText()).trim();
    const ran = await page.evaluate(async (id) => (await fetch(`/playground/runs/${id}`, { headers: { Accept: 'application/json' } })).json(), runId);
    assert.deepEqual((ran.input || ran.run?.input || {}).image_urls, [uploaded], JSON.stringify(ran));
    await open(page, '/runs');
    assert.match(await page.locator('.table-wrap tbody tr', { hasText: runId }).innerText(), /test/);
    assert.equal((await session(page)).body.account.balanceUsd, balanceBefore, 'test mode is free');

    // Copy as curl, then run the copied command with a real (test) key made here.
    await open(page, '/models/google/nano-banana-2');
    await page.fill('#pg-prompt', 'a red kite over dunes');
    await page.waitForFunction(() => document.querySelector('#pg-curl').textContent.includes('red kite'));
    await page.click('#pg-curl + button.copy');
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    assert.ok(copied.includes('$RUNBASE_API_KEY'), copied);
    assert.ok(copied.includes('"prompt":"a red kite over dunes"'), copied);
    await open(page, '/settings/api-keys');
    await page.fill('#name', 'curl from the playground');
    await page.check('#test');
    await Promise.all([
      page.waitForResponse((r) => r.url() === `${base}/settings/api-keys` && r.request().method() === 'POST'),
      page.click('button[type=submit]:text-is("Create key")'),
    ]);
    const secret = (await page.locator('#new-key-secret').innerText()).trim();
    assert.match(secret, /^sk-test-/);
    const out = await new Promise((resolveRun, reject) => {
      execFile('sh', ['-c', `${copied} --silent --max-time 10`], {
        env: { PATH: process.env.PATH, RUNBASE_API_KEY: secret },
        timeout: 15_000,
      }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolveRun(stdout)));
    });
    const created = JSON.parse(out);
    assert.match(created.id, /^run_/, out);
    assert.equal(created.model, 'google/nano-banana-2');
    assert.equal(created.input.prompt, 'a red kite over dunes');
    const done = await waitForRun(secret, created.id);
    assert.equal(done.costUsd, 0);
  }));

  it('8c. the language switch shows the pages in German and remembers it', { timeout: 30_000 }, guarded(async () => {
    const { page } = S.admin;
    await open(page, '/models');
    await Promise.all([
      page.waitForURL(`${base}/models`),
      page.click('footer a[hreflang="de"]'),
    ]);
    await page.waitForSelector('h1:text-is("Modelle")');
    assert.equal(await page.getAttribute('html', 'lang'), 'de');
    await open(page, '/google/nano-banana-2');
    await page.waitForSelector('#pg-title:text-is("Playground")');
    await page.waitForSelector('button#pg-run:text-is("Ausführen")');
    await open(page, '/');
    await page.waitForSelector('h1:text-is("Übersicht")');
    // Back to English for the tests that follow.
    await page.click('footer a[hreflang="en"]');
    await page.waitForSelector('h1:text-is("Dashboard")');
    assert.equal(await page.getAttribute('html', 'lang'), 'en');
  }));

  it('9. screenshots of every page at desktop and phone widths, none wider than the screen', { timeout: 90_000 }, guarded(async () => {
    assert.ok(S.key && S.firstRun, 'needs the key and run of earlier tests');
    const loggedIn = await S.admin.context.storageState();
    const pages = dashboardPages();
    const overflows = [];
    for (const device of [DESKTOP, PHONE]) {
      const authed = await newContext(device, loggedIn);
      const anon = await newContext(device);
      try {
        const authedPage = await authed.newPage();
        const anonPage = await anon.newPage();
        for (const p of pages) {
          const page = p.auth === false ? anonPage : authedPage;
          await open(page, p.path, p.status ?? 200);
          if (p.createKey) {
            // The list right after creating a key, with the "copy it now" panel (a test key).
            await page.fill('#name', `screenshot ${device.name}`);
            await page.check('#test');
            await Promise.all([
              page.waitForResponse((r) => r.url() === `${base}/settings/api-keys` && r.request().method() === 'POST'),
              page.click('button[type=submit]:text-is("Create key")'),
            ]);
            await page.locator('#new-key-secret').waitFor();
            assert.match(await page.locator('#new-key-secret').innerText(), /^sk-test-/);
          }
          await settleImages(page);
          const file = join(SCREENSHOT_DIR, `${p.name}-${device.name}.png`);
          await page.screenshot({ path: file, fullPage: true });
          const o = await overflowReport(page, device.viewport.width);
          if (o.scrollWidth > Math.min(o.innerWidth, device.viewport.width) + 1) {
            overflows.push(`${p.path} at ${device.name} (${device.viewport.width}px): page is ${o.scrollWidth}px wide ` +
              `(innerWidth ${o.innerWidth}); widest: ${JSON.stringify(o.offenders)}`);
          }
        }
      } finally {
        await authed.close();
        await anon.close();
      }
    }
    assert.deepEqual(overflows, [], `pages wider than the screen:\n${overflows.join('\n')}`);
  }));

  it('10. every page passes axe-core\'s WCAG 2.1 A and AA checks (nothing serious or critical)', { timeout: 60_000 }, guarded(async () => {
    assert.ok(S.key && S.firstRun, 'needs the key and run of earlier tests');
    // axe is injected as an inline script, which the pages' CSP forbids: this context alone
    // bypasses it (every other test runs with the CSP in force).
    const loggedIn = await S.admin.context.storageState();
    const authed = await newContext({ ...DESKTOP, bypassCSP: true }, loggedIn);
    const anon = await newContext({ ...DESKTOP, bypassCSP: true });
    const found = [];
    try {
      const authedPage = await authed.newPage();
      const anonPage = await anon.newPage();
      for (const p of dashboardPages()) {
        const page = p.auth === false ? anonPage : authedPage;
        await open(page, p.path, p.status ?? 200);
        for (const v of await accessibilityViolations(page)) found.push(`${p.path}: ${v}`);
      }
    } finally {
      await authed.close();
      await anon.close();
    }
    assert.deepEqual(found, [], `accessibility problems:\n${found.join('\n')}`);
  }));

  it('10b. signs in through a local OpenID provider and starts with the welcome credit', { timeout: 90_000 }, guarded(async () => {
    // A server of its own: the welcome credit would change every balance the tests above check.
    const idp = await startIdp();
    let rb2;
    const contexts = [];
    try {
      rb2 = await startRunbase(stripe.base, {
        RUNBASE_AUTH__OIDC__LOCAL__ISSUER: idp.url,
        RUNBASE_AUTH__OIDC__LOCAL__CLIENT_ID: 'runbase-e2e',
        RUNBASE_AUTH__OIDC__LOCAL__CLIENT_SECRET: 'e2e-secret',
        RUNBASE_AUTH__OIDC__LOCAL__DISPLAY_NAME: 'Local IdP',
        RUNBASE_ACCOUNTS__SIGNUP_CREDIT_CENTS: '500',
      });
      await idp.register('runbase-e2e', 'e2e-secret', `${rb2.base}/auth/oidc/local/callback`);
      const email = `oidc-${rand(6)}@e2e.test`;
      await idp.user(`sub-${rand(6)}`, email, true);
      const { name: _n, ...desktop } = DESKTOP;
      const ctx = await browser.newContext({ ...desktop, baseURL: rb2.base });
      contexts.push(ctx);
      ctx.setDefaultTimeout(15_000);
      const page = await ctx.newPage();
      await page.goto('/login', { waitUntil: 'load' });
      // Through the provider (it logs the chosen user in without a form) and back, signed in.
      await Promise.all([
        page.waitForURL(`${rb2.base}/`, { timeout: 30_000 }),
        page.click('a:has-text("Sign in with Local IdP")'),
      ]);
      await page.waitForSelector('h1:text-is("Dashboard")');
      const s = await session(page);
      assert.equal(s.body.account.email, email);
      assert.equal(s.body.account.balanceUsd, 5_000_000, 'the welcome credit, $5.00');
      await page.goto('/settings/credits', { waitUntil: 'load' });
      assert.equal((await page.locator('#balance').innerText()).trim(), '$5.00');
      assert.ok(await page.locator('table', { hasText: 'welcome credit' }).count() >= 1, 'the welcome credit has its ledger line');
      await page.screenshot({ path: join(SCREENSHOT_DIR, 'oidc-signed-in-credits-desktop.png'), fullPage: true });

      // The log-in page with the provider's button passes axe at both widths (this context
      // alone bypasses the CSP, to inject axe).
      const found = [];
      for (const device of [DESKTOP, PHONE]) {
        const { name, ...opts } = device;
        const anon = await browser.newContext({ ...opts, baseURL: rb2.base, bypassCSP: true });
        contexts.push(anon);
        const p = await anon.newPage();
        await p.goto('/login', { waitUntil: 'load' });
        await p.waitForSelector('a:has-text("Sign in with Local IdP")');
        await p.screenshot({ path: join(SCREENSHOT_DIR, `login-oidc-${name}.png`), fullPage: true });
        for (const v of await accessibilityViolations(p)) found.push(`/login (${name}): ${v}`);
      }
      assert.deepEqual(found, [], `accessibility problems:\n${found.join('\n')}`);
    } catch (e) {
      if (rb2) printServerLog(rb2);
      throw e;
    } finally {
      for (const c of contexts) await c.close().catch(() => {});
      stopRunbase(rb2);
      idp.stop();
    }
  }));

  it('11. deleting the key (confirmed) makes the API refuse it with 401', { timeout: 30_000 }, guarded(async () => {
    const { page } = S.admin;
    await keyPage(page);
    const dialogs = [];
    const onDialog = (d) => dialogs.push(d.message());
    page.on('dialog', onDialog); // the page's handler from test 1 accepts it
    await page.check('#confirm');
    await Promise.all([
      page.waitForURL(`${base}/settings/api-keys`),
      page.click('button[type=submit]:text-is("Delete key")'),
    ]);
    page.off('dialog', onDialog);
    assert.deepEqual(dialogs, ['Delete this key for good?'], 'the form asked to confirm');
    assert.equal(await page.locator('.table-wrap tbody tr', { hasText: 'e2e' }).count(), 0, 'the key is gone from the list');
    await createRun(S.key.secret, 401, 'invalid_api_key');
    await open(page, `/settings/api-keys/${S.key.id}`, 404);
    // Its runs and ledger lines stay.
    await open(page, `/runs/${S.firstRun.id}`);
    await open(page, '/settings/credits');
    assert.ok(await page.locator('.table-wrap tbody tr', { hasText: S.firstRun.id }).count() >= 1);
    await S.admin.context.close();
  }));
});
