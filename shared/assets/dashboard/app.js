/*
 * Proxy metrics dashboard.
 *
 * Plain ES2020 in a classic script: no framework, no bundler, no eval, no
 * `new Function`, no inline styles (looks are CSS classes in style.css; only
 * the vendored uPlot sizes its own elements through the CSSOM, which CSP allows).
 * All text from the API is written with textContent, never as HTML.
 *
 * The token lives in sessionStorage only (this tab, until it is closed or
 * "Forget token" is pressed); it is sent only as `Authorization: Bearer` to the
 * same origin and never appears in a URL, a cookie or a message on the page.
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'proxyMetrics.token';
  const PREFS_KEY = 'proxyMetrics.prefs';
  // Longest range for `daily`, both ends inclusive (contract: tier limits).
  const TIER_MAX_DAYS = { free: 31, pro: 366, enterprise: 3660 };
  const PERIODS = [7, 30, 90];
  // The incident periods: the last hours at 5-minute steps (option value → hours).
  const HOUR_PERIODS = { '1h': 1, '6h': 6, '24h': 24 };
  const DEFAULT_PERIOD = 30;
  const STEP_S = 300;
  const DAY_S = 86400;
  const REQUEST_TIMEOUT_MS = 20000;
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

  const COLORS = {
    axis: '#3b4552',
    grid: '#e3e7ec',
    ticks: '#c9d0d8',
    requests: '#1d4ed8',
    requestsFill: 'rgba(29, 78, 216, 0.6)',
    errorRate: '#b91c1c',
    p50: '#0e7490',
    p95: '#b45309',
    p99: '#7e22ce',
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    forget: $('forget-token'),
    error: $('error'),
    errorMessage: $('error-message'),
    errorHint: $('error-hint'),
    retry: $('retry'),
    tokenSection: $('token-section'),
    tokenForm: $('token-form'),
    tokenInput: $('token-input'),
    controls: $('controls'),
    proxySelect: $('proxy-select'),
    periodSelect: $('period-select'),
    refresh: $('refresh'),
    periodNote: $('period-note'),
    range: $('range'),
    empty: $('empty'),
    summary: $('summary'),
    tiles: $('tiles'),
    charts: $('charts'),
    chartRequests: $('chart-requests'),
    chartErrorRate: $('chart-error-rate'),
    chartLatency: $('chart-latency'),
    uptimeBars: $('uptime-bars'),
    uptimeFirst: $('uptime-first'),
    uptimeLast: $('uptime-last'),
    uptimeDetail: $('uptime-detail'),
  };

  // The API lives at the same origin as the page; if the page is ever served
  // under a path prefix (…/prefix/dashboard), the API is assumed under it too.
  const API_BASE = (() => {
    const path = window.location.pathname;
    const i = path.lastIndexOf('/dashboard');
    return i > 0 ? path.slice(0, i) : '';
  })();

  let token = null;
  let tier = 'free';
  let proxies = [];
  let charts = [];
  let uptimeDays = [];
  let selectedDay = -1;
  let loadSeq = 0;
  let inflight = null;
  let alertsPanel = null; // alerts.js, when it loaded
  let incidentView = null; // incident.js, when it loaded

  // ---------------------------------------------------------------- state

  function setState(state) {
    document.body.dataset.state = state;
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  // -------------------------------------------------------------- storage

  function storageGet(key) {
    try {
      return window.sessionStorage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  function storageSet(key, value) {
    try {
      window.sessionStorage.setItem(key, value);
    } catch (_) {
      // Storage disabled: the token then lives in memory for this page only.
    }
  }

  function storageRemove(key) {
    try {
      window.sessionStorage.removeItem(key);
    } catch (_) {
      // nothing stored
    }
  }

  function readPrefs() {
    try {
      const prefs = JSON.parse(storageGet(PREFS_KEY) || '{}');
      return prefs && typeof prefs === 'object' ? prefs : {};
    } catch (_) {
      return {};
    }
  }

  function savePrefs() {
    storageSet(PREFS_KEY, JSON.stringify({
      proxyId: ui.proxySelect.value || null,
      period: ui.periodSelect.value || String(DEFAULT_PERIOD),
    }));
  }

  // ------------------------------------------------------------ formatting

  const intFormat = new Intl.NumberFormat('en', { maximumFractionDigits: 0 });
  const compactFormat = new Intl.NumberFormat('en', { notation: 'compact', maximumFractionDigits: 1 });

  function isNum(v) {
    return typeof v === 'number' && Number.isFinite(v);
  }

  function fmtInt(v) {
    return isNum(v) ? intFormat.format(v) : '—';
  }

  function fmtCompact(v) {
    return isNum(v) ? compactFormat.format(v) : '';
  }

  function fmtMs(v) {
    if (!isNum(v)) return '—';
    if (v >= 10000) return (v / 1000).toFixed(1) + ' s';
    if (v >= 100) return Math.round(v) + ' ms';
    if (v >= 10) return v.toFixed(1) + ' ms';
    return v.toFixed(2) + ' ms';
  }

  // A percentage shown with two decimals, never rounded up to a better
  // figure than the real one (99.996 shows as 99.99, not 100.00).
  function fmtPctFloor(v) {
    if (!isNum(v)) return '—';
    // The epsilon keeps binary fractions honest: 99.3 * 100 is 9929.999…
    return (Math.floor(v * 100 + 1e-6) / 100).toFixed(2) + ' %';
  }

  function fmtPct(v) {
    if (!isNum(v)) return '—';
    if (v === 0 || v === 100) return v + ' %';
    return (v < 1 ? v.toFixed(3) : v.toFixed(2)) + ' %';
  }

  function fmtBytes(v) {
    if (!isNum(v)) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let n = v;
    let u = 0;
    while (n >= 1024 && u < units.length - 1) {
      n /= 1024;
      u += 1;
    }
    return (u === 0 ? String(n) : n.toFixed(n >= 100 ? 0 : 1)) + ' ' + units[u];
  }

  function pad2(n) {
    return String(n).padStart(2, '0');
  }

  function isoDay(tsSeconds) {
    return new Date(tsSeconds * 1000).toISOString().slice(0, 10);
  }

  function shortDay(tsSeconds) {
    const d = new Date(tsSeconds * 1000);
    return MONTHS[d.getUTCMonth()] + ' ' + d.getUTCDate();
  }

  function dayToSeconds(day) {
    const [y, m, d] = day.split('-').map(Number);
    return Date.UTC(y, m - 1, d) / 1000;
  }

  function fmtInstant(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return null;
    const d = new Date(t);
    return d.getUTCFullYear() + '-' + pad2(d.getUTCMonth() + 1) + '-' + pad2(d.getUTCDate()) + ' ' +
      pad2(d.getUTCHours()) + ':' + pad2(d.getUTCMinutes()) + ':' + pad2(d.getUTCSeconds()) + ' UTC';
  }

  function fmtAgo(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return '—';
    const s = Math.round((Date.now() - t) / 1000);
    if (s < 0) return 'just now';
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 172800) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' days ago';
  }

  function errorRate(requests, errors) {
    return isNum(requests) && requests > 0 && isNum(errors) ? (errors / requests) * 100 : null;
  }

  // --------------------------------------------------------------- dates

  // The range ends today (UTC) and covers `period` days, both ends included.
  function rangeFor(period) {
    const end = new Date().toISOString().slice(0, 10);
    const startMs = Date.UTC(
      Number(end.slice(0, 4)), Number(end.slice(5, 7)) - 1, Number(end.slice(8, 10)),
    ) - (period - 1) * DAY_S * 1000;
    return { start: new Date(startMs).toISOString().slice(0, 10), end };
  }

  function tierMaxDays() {
    return TIER_MAX_DAYS[tier] || TIER_MAX_DAYS.free;
  }

  function effectivePeriod() {
    const chosen = Number(ui.periodSelect.value) || DEFAULT_PERIOD;
    return Math.min(chosen, tierMaxDays());
  }

  // The chosen period: the last `hours` at 5-minute steps (the daily figures
  // then cover the UTC days that window touches), or `days` days ending today
  // (the 5-minute chart then shows the last 24 hours). `to` is the end of the
  // 5-minute step in progress (exclusive), `from` `hours` before it.
  function chosenPeriod() {
    const hours = HOUR_PERIODS[ui.periodSelect.value];
    const toS = Math.ceil(Date.now() / 1000 / STEP_S) * STEP_S;
    const win = { hours: hours || 24, to: toS, from: toS - (hours || 24) * 3600 };
    if (!hours) {
      const days = effectivePeriod();
      return Object.assign(win, { days, label: 'the last ' + days + ' days' }, rangeFor(days));
    }
    const end = new Date().toISOString().slice(0, 10);
    const start = isoDay(win.from) < end ? isoDay(win.from) : end;
    return Object.assign(win, { days: 0, label: hours === 1 ? 'the last hour' : 'the last ' + hours + ' hours', start, end });
  }

  // ----------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(kind, status, body, retryAfter) {
      super(kind);
      this.name = 'ApiError';
      this.kind = kind; // 'http' | 'network' | 'timeout' | 'aborted' | 'bad-response'
      this.status = status || 0;
      this.body = body && typeof body === 'object' ? body : null;
      this.retryAfter = retryAfter || null;
    }
  }

  // `load` is what beginLoad() or timedLoad() returned: its signal cancels the request.
  function apiGet(path, load) {
    return apiRequest('GET', path, load, undefined);
  }

  // One call to the API: the parsed JSON body of a 2xx (null for a 204), or
  // an ApiError. `body`, when given, is sent as JSON.
  async function apiRequest(method, path, load, body) {
    const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(API_BASE + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
        signal: load.signal,
      });
    } catch (_) {
      throw abortOrNetwork(load);
    }
    let text;
    try {
      text = await response.text();
    } catch (_) {
      throw abortOrNetwork(load);
    }
    if (response.status === 204) return null;
    let parsed = null;
    try {
      parsed = JSON.parse(text);
    } catch (_) {
      parsed = null;
    }
    if (response.ok) {
      if (parsed && typeof parsed === 'object') return parsed;
      throw new ApiError('bad-response', response.status, null, null);
    }
    throw new ApiError('http', response.status, parsed, response.headers.get('Retry-After'));
  }

  function abortOrNetwork(load) {
    if (load.timedOut) return new ApiError('timeout', 0, null, null);
    if (load.signal.aborted) return new ApiError('aborted', 0, null, null);
    return new ApiError('network', 0, null, null);
  }

  // A cancellable request context that times out after REQUEST_TIMEOUT_MS.
  function timedLoad() {
    const controller = new AbortController();
    const load = { signal: controller.signal, timedOut: false, abort: () => controller.abort() };
    const timer = window.setTimeout(() => {
      load.timedOut = true;
      controller.abort();
    }, REQUEST_TIMEOUT_MS);
    load.done = () => window.clearTimeout(timer);
    return load;
  }

  // Starts a new load of the charts' data, cancelling the one in flight.
  function beginLoad() {
    if (inflight) inflight.abort();
    const load = timedLoad();
    inflight = load;
    load.seq = ++loadSeq;
    return load;
  }

  // ------------------------------------------------------------- errors

  // A server message, made safe to show: plain text, short, and never the token.
  function cleanMessage(raw) {
    if (typeof raw !== 'string') return '';
    let text = raw.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
    if (token && token.length >= 8) text = text.split(token).join('[token]');
    if (text.length > 300) text = text.slice(0, 297) + '…';
    return text;
  }

  function retryAfterText(value) {
    const s = Number(value);
    if (Number.isFinite(s) && s > 0) {
      return ' (the service asks to wait about ' + Math.ceil(s) + ' second' + (Math.ceil(s) === 1 ? '' : 's') + ')';
    }
    return '';
  }

  // Words for an error: what happened, and what to do about it.
  function describeError(err) {
    if (!(err instanceof ApiError)) {
      return {
        message: 'The page hit an unexpected problem while showing the metrics.',
        hint: 'Reload the page; if it happens again, report it.',
      };
    }
    if (err.kind === 'network') {
      return {
        message: 'Could not reach the metrics service (network error).',
        hint: 'Check your connection, then press Retry.',
      };
    }
    if (err.kind === 'timeout') {
      return {
        message: 'The metrics service did not answer within ' + REQUEST_TIMEOUT_MS / 1000 + ' seconds.',
        hint: 'It may be busy: press Retry in a moment.',
      };
    }
    if (err.kind === 'bad-response') {
      return {
        message: 'The metrics service gave an answer this page cannot read (HTTP ' + err.status + ').',
        hint: 'Press Retry in a moment; if it persists, report it.',
      };
    }
    const body = err.body || {};
    const server = cleanMessage(body.message);
    const requestId = cleanMessage(body.requestId);
    switch (err.status) {
      case 400:
        return {
          message: server || 'The service refused the request as invalid.',
          hint: 'Reload the page and try again; if it persists, report it.',
        };
      case 401:
        return {
          message: server || 'The token was not accepted.',
          hint: 'Your token is invalid or expired: enter a new one below.',
        };
      case 403:
        return {
          message: server || 'This token is not allowed to read these metrics.',
          hint: 'Use a token with the metrics:read scope for this proxy (a proxy-scoped token can read only its own proxy).',
        };
      case 404:
        return {
          message: server || 'That proxy was not found.',
          hint: 'It does not exist or is not yours: choose another proxy, or press Refresh to read the list again.',
        };
      case 422:
        return {
          message: server || 'The period is longer than your tier allows.',
          hint: 'Choose a shorter period.',
        };
      case 429:
      case 503:
        return {
          message: server || 'The metrics service is busy.',
          hint: 'The service is busy: retry shortly with Retry' + retryAfterText(err.retryAfter) + '.',
        };
      case 500:
        return {
          message: server || 'The metrics service had an internal error.',
          hint: 'Retry shortly; if it keeps failing, report it' +
            (requestId ? ' with request id ' + requestId : '') + '.',
        };
      default:
        return {
          message: server || 'The metrics service answered with an unexpected error (HTTP ' + err.status + ').',
          hint: 'Press Retry in a moment; if it persists, report it.',
        };
    }
  }

  // Errors worth trying again as they are: the network, a timeout, a busy or failing service.
  function isRetryable(err) {
    if (!(err instanceof ApiError)) return false;
    if (err.kind !== 'http') return err.kind !== 'aborted';
    return err.status === 429 || err.status >= 500;
  }

  function showError(err) {
    const { message, hint } = describeError(err);
    ui.errorMessage.textContent = message;
    ui.errorHint.textContent = hint;
    show(ui.retry, isRetryable(err) && Boolean(token));
    if (err instanceof ApiError && err.kind === 'http') {
      ui.error.dataset.status = String(err.status);
      const kind = err.body && typeof err.body.error === 'string' ? err.body.error : '';
      ui.error.dataset.errorKind = /^[A-Z_]{1,64}$/.test(kind) ? kind : '';
    } else {
      ui.error.dataset.status = '';
      ui.error.dataset.errorKind = err instanceof ApiError ? err.kind.toUpperCase() : 'CLIENT';
    }
    show(ui.error, true);
  }

  function showSimpleError(message, hint) {
    show(ui.retry, false);
    ui.errorMessage.textContent = message;
    ui.errorHint.textContent = hint;
    ui.error.dataset.status = '';
    ui.error.dataset.errorKind = 'CLIENT';
    show(ui.error, true);
  }

  function clearError() {
    show(ui.error, false);
    show(ui.retry, false);
    ui.errorMessage.textContent = '';
    ui.errorHint.textContent = '';
    delete ui.error.dataset.status;
    delete ui.error.dataset.errorKind;
  }

  // Shows a failed load; a 401 also drops the token and asks for a new one.
  function failLoad(err) {
    showError(err);
    hideData();
    show(ui.empty, false);
    if (err instanceof ApiError && err.kind === 'http' && err.status === 401) {
      dropToken();
      showTokenForm(false);
    }
    setState('error');
  }

  // -------------------------------------------------------------- token

  function dropToken() {
    token = null;
    storageRemove(TOKEN_KEY);
  }

  function showTokenForm(focus) {
    show(ui.tokenSection, true);
    show(ui.forget, false);
    show(ui.controls, false);
    show(ui.empty, false);
    hideData();
    ui.proxySelect.replaceChildren();
    proxies = [];
    if (alertsPanel) alertsPanel.hide();
    if (focus) ui.tokenInput.focus();
  }

  function onTokenSubmit(event) {
    event.preventDefault();
    let value = ui.tokenInput.value.trim();
    value = value.replace(/^bearer\s+/i, '');
    if (!value) {
      showSimpleError('No token was entered.', 'Paste your API token into the field, then press "Use token".');
      setState('token');
      ui.tokenInput.focus();
      return;
    }
    if (/\s/.test(value)) {
      showSimpleError('That does not look like a token: it contains spaces or line breaks.',
        'Paste the token alone (three dot-separated parts), without quotes.');
      setState('token');
      ui.tokenInput.focus();
      return;
    }
    token = value;
    storageSet(TOKEN_KEY, value);
    ui.tokenInput.value = '';
    clearError();
    startSession();
  }

  function onForget() {
    if (inflight) inflight.abort();
    loadSeq += 1;
    dropToken();
    storageRemove(PREFS_KEY);
    clearError();
    showTokenForm(true);
    setState('token');
  }

  // ------------------------------------------------------------- loading

  function startSession() {
    show(ui.tokenSection, false);
    show(ui.forget, true);
    loadProxies();
  }

  async function loadProxies() {
    const load = beginLoad();
    setState('loading');
    show(ui.empty, false);
    ui.refresh.disabled = true;
    let body;
    try {
      body = await apiGet('/proxies', load);
    } catch (err) {
      if (load.seq !== loadSeq || (err instanceof ApiError && err.kind === 'aborted')) return;
      ui.refresh.disabled = false;
      failLoad(err);
      return;
    } finally {
      load.done();
    }
    if (load.seq !== loadSeq) return;
    ui.refresh.disabled = false;

    tier = typeof body.tier === 'string' && TIER_MAX_DAYS[body.tier] ? body.tier : 'free';
    proxies = Array.isArray(body.proxies)
      ? body.proxies.filter((p) => p && typeof p.proxyId === 'string' && p.proxyId)
      : [];

    if (proxies.length === 0) {
      show(ui.controls, false);
      hideData();
      if (alertsPanel) alertsPanel.hide();
      clearError();
      ui.empty.textContent = 'No proxies registered yet. Register one (POST /proxies with a token that has ' +
        'proxies:write), then reload this page.';
      show(ui.empty, true);
      setState('empty');
      return;
    }

    const prefs = readPrefs();
    const previous = ui.proxySelect.value || prefs.proxyId;
    ui.proxySelect.replaceChildren(...proxies.map((p) => {
      const name = typeof p.name === 'string' && p.name.trim() ? p.name.trim() : '';
      const label = name && name !== p.proxyId ? name + ' (' + p.proxyId + ')' : p.proxyId;
      return new Option(label, p.proxyId);
    }));
    if (previous && proxies.some((p) => p.proxyId === previous)) ui.proxySelect.value = previous;
    applyTier(prefs.period);
    show(ui.controls, true);
    loadProxyData();
  }

  // Disables the periods the caller's tier refuses, and says so.
  function applyTier(preferredPeriod) {
    const max = tierMaxDays();
    const wantedHours = HOUR_PERIODS[String(preferredPeriod)] ? String(preferredPeriod) : null;
    const wanted = Number(preferredPeriod) || Number(ui.periodSelect.value) || DEFAULT_PERIOD;
    const refused = [];
    for (const option of ui.periodSelect.options) {
      if (HOUR_PERIODS[option.value]) continue; // hours are within every tier's range
      const days = Number(option.value);
      const over = days > max;
      option.disabled = over;
      option.textContent = 'Last ' + days + ' days' + (over ? ' (not in the ' + tier + ' tier)' : '');
      if (over) refused.push(days);
    }
    const allowed = PERIODS.filter((d) => d <= max);
    const pick = allowed.includes(wanted) ? wanted : (allowed.includes(DEFAULT_PERIOD) ? DEFAULT_PERIOD : allowed[allowed.length - 1]);
    ui.periodSelect.value = wantedHours || String(pick);
    if (refused.length) {
      ui.periodNote.textContent = 'Your ' + tier + ' tier allows periods of up to ' + max + ' days, so ' +
        refused.map((d) => d + ' days').join(' and ') + ' is not available' +
        (wanted > max ? '; showing the last ' + pick + ' days instead.' : '.');
      show(ui.periodNote, true);
    } else {
      show(ui.periodNote, false);
    }
  }

  async function loadProxyData() {
    const proxyId = ui.proxySelect.value;
    if (!proxyId) return;
    const period = chosenPeriod();
    const { start, end } = period;
    savePrefs();
    ui.range.textContent = period.days
      ? start + ' to ' + end + ' (UTC), ' + period.days + ' days.'
      : 'Last ' + period.hours + ' h: ' + fmtInstant(new Date(period.from * 1000).toISOString()) + ' to ' +
        fmtInstant(new Date(period.to * 1000).toISOString()) + ', at 5-minute steps (daily charts: choose 7 days ' +
        'or more).';
    if (alertsPanel) alertsPanel.show(proxyId, proxyLabel(proxyId));
    if (incidentView) incidentView.show(proxyId, period);

    const load = beginLoad();
    setState('loading');
    clearError();
    ui.refresh.disabled = true;
    const id = encodeURIComponent(proxyId);
    let daily;
    let summary;
    try {
      [daily, summary] = await Promise.all([
        apiGet('/proxy/metrics/' + id + '/daily?startDate=' + start + '&endDate=' + end, load),
        apiGet('/proxy/metrics/' + id + '/summary', load),
      ]);
    } catch (err) {
      if (load.seq !== loadSeq || (err instanceof ApiError && err.kind === 'aborted')) return;
      ui.refresh.disabled = false;
      failLoad(err);
      return;
    } finally {
      load.done();
    }
    if (load.seq !== loadSeq) return;
    ui.refresh.disabled = false;

    try {
      render(proxyId, period, start, end, daily, summary);
    } catch (err) {
      // Never a stack trace on the page; the console keeps the detail.
      console.warn('dashboard: render failed', err && err.name);
      failLoad(err);
    }
  }

  // ------------------------------------------------------------- render

  function hideData() {
    destroyCharts();
    if (incidentView) incidentView.hide();
    show(ui.summary, false);
    show(ui.charts, false);
    ui.tiles.replaceChildren();
    ui.uptimeBars.replaceChildren();
    uptimeDays = [];
    selectedDay = -1;
  }

  function proxyLabel(proxyId) {
    const p = proxies.find((x) => x.proxyId === proxyId);
    return p && typeof p.name === 'string' && p.name.trim() ? p.name.trim() : proxyId;
  }

  function num(v) {
    return isNum(v) ? v : null;
  }

  // One entry per day of the range, in order, whatever the answer holds.
  function normaliseDays(metrics, start, end) {
    const byDate = new Map();
    if (Array.isArray(metrics)) {
      for (const m of metrics) {
        if (m && typeof m.date === 'string') byDate.set(m.date, m);
      }
    }
    const days = [];
    for (let t = dayToSeconds(start); t <= dayToSeconds(end); t += DAY_S) {
      const date = isoDay(t);
      const m = byDate.get(date) || {};
      days.push({
        date,
        ts: t,
        eventCount: num(m.eventCount) || 0,
        requestCount: num(m.requestCount) || 0,
        errorCount: num(m.errorCount) || 0,
        p50: num(m.p50LatencyMs),
        p95: num(m.p95LatencyMs),
        p99: num(m.p99LatencyMs),
        uptime: num(m.uptimePercentage),
      });
    }
    return days;
  }

  function clearDaily() {
    destroyCharts();
    ui.uptimeBars.replaceChildren();
    uptimeDays = [];
    selectedDay = -1;
    show(ui.charts, false);
  }

  // `period` is chosenPeriod()'s; an hour-based one shows the incident view's
  // 5-minute charts instead of the daily ones (one or two days say little).
  function render(proxyId, period, start, end, daily, summary) {
    const days = normaliseDays(daily.metrics, start, end);
    clearError();
    renderTiles(summary);
    show(ui.summary, true);
    ui.charts.dataset.proxyId = proxyId;
    ui.charts.dataset.startDate = start;
    ui.charts.dataset.endDate = end;
    ui.charts.dataset.days = String(days.length);

    const hasEvents = days.some((d) => d.eventCount > 0 || d.requestCount > 0);
    if (!hasEvents) {
      clearDaily();
      if (incidentView) incidentView.hide();
      ui.empty.textContent = 'No events yet for ' + proxyLabel(proxyId) + ' in ' + period.label +
        ' (' + start + ' to ' + end + ', UTC). Charts appear once the proxy records metrics.';
      show(ui.empty, true);
      setState('empty');
      return;
    }
    show(ui.empty, false);
    if (!period.days) {
      clearDaily();
      setState('ready');
      return;
    }
    show(ui.charts, true); // visible before drawing, so the containers have a width
    renderCharts(days);
    renderUptime(days);
    setState('ready');
  }

  function tile(key, label, value, sub) {
    const node = document.createElement('div');
    node.className = 'tile';
    node.dataset.tile = key;
    const l = document.createElement('p');
    l.className = 'tile-label';
    l.textContent = label;
    const v = document.createElement('p');
    v.className = 'tile-value';
    v.textContent = value;
    node.append(l, v);
    if (sub) {
      const s = document.createElement('p');
      s.className = 'tile-sub';
      s.textContent = sub;
      node.append(s);
    }
    return node;
  }

  function renderTiles(summary) {
    const h = (summary && summary.lastHour) || {};
    const d = (summary && summary.last24Hours) || {};
    const requests = num(h.requestCount);
    const errors = num(h.errorCount);
    const successes = num(h.successCount);
    const successRate = isNum(requests) && requests > 0 && isNum(successes) ? (successes / requests) * 100 : null;
    const lastEvent = summary && typeof summary.lastEventAt === 'string' ? summary.lastEventAt : null;
    const lastEventAbs = lastEvent ? fmtInstant(lastEvent) : null;

    ui.tiles.replaceChildren(
      tile('requests', 'Requests', fmtInt(requests), '24 h: ' + fmtInt(d.requestCount)),
      tile('error-rate', 'Error rate', fmtPct(errorRate(requests, errors)),
        'Success rate ' + fmtPct(successRate) + ' · ' + fmtInt(errors) + ' errors'),
      tile('average-latency', 'Average latency', fmtMs(h.averageLatencyMs), '24 h: ' + fmtMs(d.averageLatencyMs)),
      tile('p95-latency', 'p95 latency', fmtMs(h.p95LatencyMs), '24 h: ' + fmtMs(d.p95LatencyMs)),
      tile('bytes-transferred', 'Data transferred', fmtBytes(h.dataTransferredBytes),
        '24 h: ' + fmtBytes(d.dataTransferredBytes)),
      tile('bytes-received', 'Data received', fmtBytes(h.dataReceivedBytes),
        '24 h: ' + fmtBytes(d.dataReceivedBytes)),
      tile('concurrent-connections', 'Concurrent connections', fmtInt(summary && summary.concurrentConnections),
        'latest reported value'),
      tile('last-event', 'Last event', lastEventAbs ? fmtAgo(lastEvent) : 'never',
        lastEventAbs || 'no event recorded yet'),
    );
  }

  // ------------------------------------------------------------- charts

  function chartHeight() {
    return window.matchMedia('(max-width: 600px)').matches ? 180 : 230;
  }

  function destroyCharts() {
    for (const c of charts) {
      if (resizeObserver) resizeObserver.unobserve(c.container);
      c.plot.destroy();
    }
    charts = [];
  }

  function xAxis() {
    return {
      stroke: COLORS.axis,
      grid: { stroke: COLORS.grid, width: 1 },
      ticks: { stroke: COLORS.ticks, width: 1 },
      space: 56,
      incrs: [DAY_S, 2 * DAY_S, 3 * DAY_S, 7 * DAY_S, 14 * DAY_S, 28 * DAY_S],
      values: (u, splits) => splits.map((ts) => shortDay(ts)),
    };
  }

  function yAxis(format) {
    return {
      stroke: COLORS.axis,
      grid: { stroke: COLORS.grid, width: 1 },
      ticks: { stroke: COLORS.ticks, width: 1 },
      size: 56,
      values: (u, splits) => splits.map(format),
    };
  }

  function baseOptions(width, height) {
    return {
      width,
      height,
      // Days are UTC days: keep the time axis in UTC whatever the browser's zone.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
      cursor: { drag: { x: false, y: false, setScale: false } },
      legend: { live: true },
      scales: {
        x: { time: true, range: (u, min, max) => [min - DAY_S / 2, max + DAY_S / 2] },
      },
      series: [{ label: 'Day', value: (u, ts) => (ts == null ? '—' : isoDay(ts)) }],
    };
  }

  function upperBound(max, floor, ceiling) {
    const top = isNum(max) && max > 0 ? max * 1.1 : floor;
    return Math.min(Math.max(top, floor), ceiling);
  }

  function makeChart(container, configure, data) {
    const width = Math.max(container.clientWidth, 200);
    const opts = configure(baseOptions(width, chartHeight()));
    const plot = new uPlot(opts, data, container);
    charts.push({ plot, container });
    if (resizeObserver) resizeObserver.observe(container);
  }

  function renderCharts(days) {
    destroyCharts();
    const xs = days.map((d) => d.ts);

    makeChart(ui.chartRequests, (o) => {
      o.scales.y = { range: (u, min, max) => [0, upperBound(max, 1, Infinity)] };
      o.axes = [xAxis(), yAxis(fmtCompact)];
      o.series.push({
        label: 'Requests',
        stroke: COLORS.requests,
        fill: COLORS.requestsFill,
        width: 1,
        paths: uPlot.paths.bars({ size: [0.7, 48], align: 0 }),
        points: { show: false },
        value: (u, v) => fmtInt(v),
      });
      return o;
    }, [xs, days.map((d) => d.requestCount)]);

    makeChart(ui.chartErrorRate, (o) => {
      o.scales.y = { range: (u, min, max) => [0, upperBound(max, 1, 100)] };
      o.axes = [xAxis(), yAxis((v) => fmtCompact(v) + '%')];
      o.series.push({
        label: 'Error rate',
        stroke: COLORS.errorRate,
        width: 2,
        spanGaps: false,
        points: { show: true, size: 5, fill: COLORS.errorRate },
        value: (u, v) => fmtPct(v),
      });
      return o;
    }, [xs, days.map((d) => errorRate(d.requestCount, d.errorCount))]);

    makeChart(ui.chartLatency, (o) => {
      o.scales.y = { range: (u, min, max) => [0, upperBound(max, 1, Infinity)] };
      o.axes = [xAxis(), yAxis((v) => fmtCompact(v))];
      for (const [label, color] of [['p50', COLORS.p50], ['p95', COLORS.p95], ['p99', COLORS.p99]]) {
        o.series.push({
          label,
          stroke: color,
          width: 2,
          spanGaps: false,
          points: { show: true, size: 4, fill: color },
          value: (u, v) => fmtMs(v),
        });
      }
      return o;
    }, [xs, days.map((d) => d.p50), days.map((d) => d.p95), days.map((d) => d.p99)]);
  }

  let resizePending = false;
  function resizeCharts() {
    if (resizePending) return;
    resizePending = true;
    window.requestAnimationFrame(() => {
      resizePending = false;
      const height = chartHeight();
      for (const c of charts) {
        const width = Math.max(c.container.clientWidth, 200);
        if (width !== c.plot.width || height !== c.plot.height) c.plot.setSize({ width, height });
      }
    });
  }

  const resizeObserver = typeof ResizeObserver === 'function' ? new ResizeObserver(resizeCharts) : null;

  // ------------------------------------------------------------- uptime

  function uptimeLevel(v) {
    if (!isNum(v)) return 'none';
    if (v >= 99.9) return 'good';
    if (v >= 99) return 'warn';
    return 'bad';
  }

  function describeDay(d) {
    return d.date + ': uptime ' + (isNum(d.uptime) ? fmtPctFloor(d.uptime) : 'no data') +
      ', ' + fmtInt(d.requestCount) + ' requests, ' + fmtInt(d.errorCount) + ' errors, p95 ' +
      (isNum(d.p95) ? fmtMs(d.p95) : '—');
  }

  function renderUptime(days) {
    uptimeDays = days;
    selectedDay = -1;
    const bars = days.map((d, i) => {
      const bar = document.createElement('div');
      const level = uptimeLevel(d.uptime);
      bar.className = 'uptime-bar uptime-' + level;
      bar.setAttribute('role', 'listitem');
      bar.dataset.index = String(i);
      bar.dataset.date = d.date;
      bar.dataset.uptime = isNum(d.uptime) ? String(d.uptime) : '';
      bar.dataset.level = level;
      bar.dataset.requests = String(d.requestCount);
      bar.dataset.errors = String(d.errorCount);
      bar.dataset.p95 = isNum(d.p95) ? String(d.p95) : '';
      const text = describeDay(d);
      bar.title = text;
      bar.setAttribute('aria-label', text);
      return bar;
    });
    ui.uptimeBars.replaceChildren(...bars);
    ui.uptimeFirst.textContent = days.length ? days[0].date : '';
    ui.uptimeLast.textContent = days.length ? days[days.length - 1].date : '';
    ui.uptimeDetail.textContent = 'Point at, tap or use the arrow keys on a day to see its figures.';
  }

  function selectDay(i) {
    if (i < 0 || i >= uptimeDays.length) return;
    const bars = ui.uptimeBars.children;
    if (selectedDay >= 0 && bars[selectedDay]) bars[selectedDay].classList.remove('is-selected');
    selectedDay = i;
    bars[i].classList.add('is-selected');
    ui.uptimeDetail.textContent = describeDay(uptimeDays[i]);
  }

  function barIndex(target) {
    const bar = target instanceof Element ? target.closest('.uptime-bar') : null;
    return bar ? Number(bar.dataset.index) : -1;
  }

  function onUptimeKey(event) {
    if (!uptimeDays.length) return;
    const last = uptimeDays.length - 1;
    const current = selectedDay < 0 ? last : selectedDay;
    let next = null;
    if (event.key === 'ArrowLeft') next = Math.max(0, current - (selectedDay < 0 ? 0 : 1));
    else if (event.key === 'ArrowRight') next = Math.min(last, current + (selectedDay < 0 ? 0 : 1));
    else if (event.key === 'Home') next = 0;
    else if (event.key === 'End') next = last;
    if (next !== null) {
      event.preventDefault();
      selectDay(next);
    }
  }

  // ------------------------------------------------------------- alerts

  // The scopes of the token (its `scope` claim), or null when it has none
  // (a user token: every scope). Decoded only to say in advance what the
  // token cannot do; the API decides.
  function tokenScopes() {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
      return typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : null;
    } catch (_) {
      return null;
    }
  }

  // What alerts.js and incident.js may use: requests with the token (never the token itself).
  function panelContext() {
    return {
      request: (method, path, body) => {
        const load = timedLoad();
        return apiRequest(method, path, load, body).finally(load.done);
      },
      ApiError,
      describeError,
      cleanMessage,
      fmtInstant,
      fmtAgo,
      fmtInt,
      fmtCompact,
      fmtMs,
      fmtPct,
      errorRate,
      colors: COLORS,
      tokenScopes,
      // A 401 in the panel ends the session as one anywhere else does.
      onUnauthorized: (err) => {
        if (inflight) inflight.abort();
        loadSeq += 1;
        ui.refresh.disabled = false;
        failLoad(err);
      },
    };
  }

  // --------------------------------------------------------------- init

  function init() {
    ui.tokenForm.addEventListener('submit', onTokenSubmit);
    ui.forget.addEventListener('click', onForget);
    ui.proxySelect.addEventListener('change', loadProxyData);
    ui.periodSelect.addEventListener('change', loadProxyData);
    // Refresh and Retry read the proxy list again (it may have changed), then the data.
    const reload = () => {
      if (token) loadProxies();
    };
    ui.refresh.addEventListener('click', reload);
    ui.retry.addEventListener('click', reload);
    ui.uptimeBars.addEventListener('mouseover', (e) => {
      const i = barIndex(e.target);
      if (i >= 0) selectDay(i);
    });
    ui.uptimeBars.addEventListener('click', (e) => {
      const i = barIndex(e.target);
      if (i >= 0) selectDay(i);
    });
    ui.uptimeBars.addEventListener('keydown', onUptimeKey);
    if (!resizeObserver) window.addEventListener('resize', resizeCharts);
    if (window.ProxyMetricsAlerts) alertsPanel = window.ProxyMetricsAlerts.create(panelContext());
    if (window.ProxyMetricsIncident) incidentView = window.ProxyMetricsIncident.create(panelContext());

    if (typeof window.uPlot !== 'function') {
      showSimpleError('The chart library did not load.', 'Reload the page; if it persists, report it.');
      setState('error');
      return;
    }

    token = storageGet(TOKEN_KEY);
    if (token) {
      startSession();
    } else {
      showTokenForm(false);
      setState('token');
    }
  }

  init();
})();
