/*
 * Proxy metrics dashboard: the incident view of the chosen proxy.
 *
 * "When": requests, error rate and p95 latency at 5-minute steps over the
 * last 1, 6 or 24 hours (GET …/series?step=5m), three uPlot charts with one
 * shared cursor. "Where": the top routes of the chosen period (GET
 * …/breakdown?by=route) in a table sorted by clicking its headers; the
 * numeric columns ask the API for that order (`sort`), so the rows are the
 * top routes by that figure, not a re-ordering of another top list.
 *
 * Same rules as app.js: a classic ES2020 script, no inline styles (uPlot
 * sizes its own elements through the CSSOM, which CSP allows), API text
 * written with textContent only. It never sees the token: app.js hands it a
 * `request` function that adds it.
 *
 * Loaded before app.js, it only defines `window.ProxyMetricsIncident`;
 * app.js calls `create(context)` and then `show(proxyId, period)` / `hide()`,
 * `period` being `{hours, from, to, days, start, end}` (seconds; dates UTC).
 */
(function () {
  'use strict';

  const STEP_S = 300;
  const ROUTE_LIMIT = 25;
  const OTHER = '__other__';
  const NONE = '(none)';
  // Table column → the API's `sort` (the route name has none: sorted here).
  const API_SORT = { requests: 'requests', errorRate: 'errorRate', p95: 'p95' };
  const SORT_WORDS = { route: 'route', requests: 'requests', errorRate: 'error rate', p95: 'p95 latency' };

  const $ = (id) => document.getElementById(id);

  function create(ctx) {
    const ui = {
      panel: $('incident'),
      heading: $('incident-heading'),
      window: $('incident-window'),
      error: $('incident-error'),
      errorMessage: $('incident-error-message'),
      errorHint: $('incident-error-hint'),
      charts: $('incident-charts'),
      requests: $('chart-5m-requests'),
      errorRate: $('chart-5m-error-rate'),
      p95: $('chart-5m-p95'),
      routes: $('routes'),
      routesNote: $('routes-note'),
      routesCaption: $('routes-caption'),
      routesEmpty: $('routes-empty'),
      table: $('routes-table'),
      body: $('routes-body'),
    };
    if (!ui.panel || typeof window.uPlot !== 'function') return { show() {}, hide() {} };

    const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
    let current = null; // {proxyId, period}
    let seq = 0;
    let plots = [];
    let rows = [];
    let other = null;
    let sortKey = 'requests';
    let direction = 'descending';
    let apiSort = 'requests';

    // ------------------------------------------------------------- helpers

    function pad2(n) {
      return String(n).padStart(2, '0');
    }

    function hhmm(ts) {
      const d = new Date(ts * 1000);
      return pad2(d.getUTCHours()) + ':' + pad2(d.getUTCMinutes());
    }

    function instant(ts) {
      return new Date(ts * 1000).toISOString().replace('.000Z', 'Z');
    }

    function setState(state) {
      ui.panel.dataset.state = state;
    }

    function showError(err) {
      if (err instanceof ctx.ApiError && err.kind === 'http' && err.status === 401) {
        ctx.onUnauthorized(err);
        return;
      }
      const { message, hint } = ctx.describeError(err);
      ui.errorMessage.textContent = message;
      ui.errorHint.textContent = hint;
      ui.error.dataset.status = err instanceof ctx.ApiError && err.kind === 'http' ? String(err.status) : '';
      ui.error.hidden = false;
      setState('error');
    }

    function clearError() {
      ui.error.hidden = true;
      ui.errorMessage.textContent = '';
      ui.errorHint.textContent = '';
    }

    function base(id) {
      return '/proxy/metrics/' + encodeURIComponent(id);
    }

    // ------------------------------------------------------------- charts

    function chartHeight() {
      return window.matchMedia('(max-width: 600px)').matches ? 150 : 170;
    }

    function destroyPlots() {
      for (const p of plots) {
        if (resizeObserver) resizeObserver.unobserve(p.container);
        p.plot.destroy();
      }
      plots = [];
    }

    function axis(format, size) {
      return {
        stroke: ctx.colors.axis,
        grid: { stroke: ctx.colors.grid, width: 1 },
        ticks: { stroke: ctx.colors.ticks, width: 1 },
        size,
        values: format ? (u, splits) => splits.map(format) : undefined,
      };
    }

    function plot(container, series, yRange, yFormat, data, period) {
      const opts = {
        width: Math.max(container.clientWidth, 200),
        height: chartHeight(),
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
        cursor: { sync: { key: 'proxy-metrics-5m' }, drag: { x: false, y: false, setScale: false } },
        legend: { live: true },
        scales: {
          x: { time: true, range: () => [period.from, period.to] },
          y: { range: yRange },
        },
        axes: [
          Object.assign(axis(null, 40), { space: 60, values: (u, splits) => splits.map(hhmm) }),
          axis(yFormat, 52),
        ],
        series: [{ label: 'UTC', value: (u, ts) => (ts == null ? '—' : hhmm(ts)) }, series],
      };
      const p = new uPlot(opts, data, container);
      plots.push({ plot: p, container });
      if (resizeObserver) resizeObserver.observe(container);
    }

    function upper(max, floor, ceiling) {
      const top = isNum(max) && max > 0 ? max * 1.1 : floor;
      return Math.min(Math.max(top, floor), ceiling);
    }

    // Every 5-minute step of the window, whatever the answer holds.
    function steps(points, period) {
      const byStart = new Map();
      for (const p of Array.isArray(points) ? points : []) {
        const t = p && typeof p.start === 'string' ? Date.parse(p.start) / 1000 : NaN;
        if (Number.isFinite(t)) byStart.set(t, p);
      }
      const out = [];
      for (let t = period.from; t < period.to; t += STEP_S) {
        const p = byStart.get(t) || {};
        out.push({
          ts: t,
          requests: isNum(p.requestCount) ? p.requestCount : 0,
          errors: isNum(p.errorCount) ? p.errorCount : 0,
          p95: isNum(p.p95LatencyMs) ? p.p95LatencyMs : null,
        });
      }
      return out;
    }

    function renderSeries(points, period) {
      destroyPlots();
      const s = steps(points, period);
      const xs = s.map((p) => p.ts);
      const total = s.reduce((n, p) => n + p.requests, 0);
      ui.charts.dataset.step = '5m';
      ui.charts.dataset.from = instant(period.from);
      ui.charts.dataset.to = instant(period.to);
      ui.charts.dataset.points = String(s.length);
      ui.charts.dataset.requests = String(total);
      ui.charts.dataset.errors = String(s.reduce((n, p) => n + p.errors, 0));
      plot(ui.requests, {
        label: 'Requests', stroke: ctx.colors.requests, fill: ctx.colors.requestsFill, width: 1,
        paths: uPlot.paths.bars({ size: [0.8, 16], align: 1 }), points: { show: false },
        value: (u, v) => ctx.fmtInt(v),
      }, (u, min, max) => [0, upper(max, 1, Infinity)], ctx.fmtCompact, [xs, s.map((p) => p.requests)], period);
      plot(ui.errorRate, {
        label: 'Error rate', stroke: ctx.colors.errorRate, width: 2, spanGaps: false,
        points: { show: s.length <= 72, size: 4, fill: ctx.colors.errorRate }, value: (u, v) => ctx.fmtPct(v),
      }, (u, min, max) => [0, upper(max, 1, 100)], (v) => ctx.fmtCompact(v) + '%',
      [xs, s.map((p) => ctx.errorRate(p.requests, p.errors))], period);
      plot(ui.p95, {
        label: 'p95', stroke: ctx.colors.p95, width: 2, spanGaps: false,
        points: { show: s.length <= 72, size: 4, fill: ctx.colors.p95 }, value: (u, v) => ctx.fmtMs(v),
      }, (u, min, max) => [0, upper(max, 1, Infinity)], ctx.fmtCompact, [xs, s.map((p) => p.p95)], period);
    }

    let resizePending = false;
    function resize() {
      if (resizePending) return;
      resizePending = true;
      window.requestAnimationFrame(() => {
        resizePending = false;
        const height = chartHeight();
        for (const p of plots) {
          const width = Math.max(p.container.clientWidth, 200);
          if (width !== p.plot.width || height !== p.plot.height) p.plot.setSize({ width, height });
        }
      });
    }
    const resizeObserver = typeof ResizeObserver === 'function' ? new ResizeObserver(resize) : null;
    if (!resizeObserver) window.addEventListener('resize', resize);

    // ------------------------------------------------------------- routes

    function routeRow(v) {
      const requests = isNum(v.requestCount) ? v.requestCount : 0;
      const errors = isNum(v.errorCount) ? v.errorCount : 0;
      return {
        value: typeof v.value === 'string' ? v.value : '',
        requests,
        errors,
        errorRate: ctx.errorRate(requests, errors),
        p95: isNum(v.p95LatencyMs) ? v.p95LatencyMs : null,
      };
    }

    function compare(a, b) {
      if (sortKey === 'route') {
        const c = a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
        return direction === 'ascending' ? c : -c;
      }
      const x = a[sortKey];
      const y = b[sortKey];
      if (x === null || y === null) {
        // Routes without the figure go last, whichever the direction.
        if (x !== y) return x === null ? 1 : -1;
      } else if (x !== y) {
        return direction === 'ascending' ? x - y : y - x;
      }
      return b.requests - a.requests || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0);
    }

    function cell(text, className) {
      const td = document.createElement('td');
      td.textContent = text;
      if (className) td.className = className;
      return td;
    }

    function routeCell(row) {
      const th = document.createElement('th');
      th.scope = 'row';
      th.className = 'route-name';
      if (row.value === OTHER) {
        th.classList.add('route-other');
        th.textContent = 'other routes (past the cap)';
        const sub = document.createElement('span');
        sub.className = 'route-sub';
        const n = other && isNum(other.distinctValues) ? other.distinctValues : null;
        sub.textContent = n === null ? '' : ctx.fmtInt(n) + ' distinct route' + (n === 1 ? '' : 's');
        th.append(' ', sub);
      } else if (row.value === NONE) {
        th.classList.add('route-none');
        th.textContent = 'no route';
      } else {
        // A line may break after each `/` (long routes on a phone).
        for (const part of row.value.split(/(?<=\/)/)) th.append(part, document.createElement('wbr'));
      }
      return th;
    }

    function renderRoutes() {
      const sorted = rows.slice().sort(compare);
      ui.body.replaceChildren(...sorted.map((r) => {
        const tr = document.createElement('tr');
        tr.className = 'route-row';
        tr.dataset.value = r.value;
        tr.dataset.requests = String(r.requests);
        tr.dataset.errors = String(r.errors);
        tr.dataset.errorRate = isNum(r.errorRate) ? String(r.errorRate) : '';
        tr.dataset.p95 = isNum(r.p95) ? String(r.p95) : '';
        tr.append(routeCell(r), cell(ctx.fmtInt(r.requests), 'num'), cell(ctx.fmtPct(r.errorRate), 'num'),
          cell(ctx.fmtMs(r.p95), 'num'));
        return tr;
      }));
      for (const th of ui.table.querySelectorAll('thead th[data-sort]')) {
        if (th.dataset.sort === sortKey) th.setAttribute('aria-sort', direction);
        else th.removeAttribute('aria-sort');
      }
      ui.routes.dataset.sort = sortKey;
      ui.routes.dataset.direction = direction;
      ui.routes.dataset.apiSort = apiSort;
      ui.routes.dataset.count = String(rows.length);
      ui.routes.dataset.otherDistinct = other && isNum(other.distinctValues) ? String(other.distinctValues) : '0';
      const order = sortKey === 'route'
        ? 'route name, ' + (direction === 'ascending' ? 'A to Z' : 'Z to A')
        : SORT_WORDS[sortKey] + ', ' + (direction === 'ascending' ? 'lowest' : 'highest') + ' first';
      ui.routesCaption.textContent = 'Top ' + ROUTE_LIMIT + ' routes by ' + SORT_WORDS[apiSort] +
        ' (' + rows.length + ' shown), ordered by ' + order + '.';
      ui.table.hidden = rows.length === 0;
      ui.routesEmpty.hidden = rows.length > 0;
      ui.routesEmpty.textContent = rows.length ? '' : 'No events in these days.';
    }

    function routesNote(period) {
      const days = period.start === period.end ? period.start : period.start + ' and ' + period.end;
      if (period.days) {
        return 'Routes of ' + period.start + ' to ' + period.end + ' (UTC days, the chosen period).';
      }
      return 'Routes of ' + days + ' (UTC' + (period.start === period.end ? ', the day so far' : '') +
        '): breakdowns are by whole UTC days, so this covers more than the last ' + period.hours + ' h' +
        (period.start === period.end ? '.' : ', which cross midnight.');
    }

    function breakdownPath(id, period, sort) {
      return base(id) + '/breakdown?by=route&startDate=' + period.start + '&endDate=' + period.end +
        '&sort=' + sort + '&limit=' + ROUTE_LIMIT;
    }

    function takeBreakdown(body, sort) {
      apiSort = sort;
      rows = (body && Array.isArray(body.values) ? body.values : []).filter((v) => v && typeof v === 'object')
        .map(routeRow);
      other = body && body.other && typeof body.other === 'object' ? body.other : null;
      renderRoutes();
    }

    // A header was clicked: the same column flips direction (the rows stay);
    // another column sorts by it, highest first (A to Z for the name), asking
    // the API for its top routes by that figure when it has such a sort.
    async function onSort(key) {
      if (!current || !SORT_WORDS[key]) return;
      if (key === sortKey) {
        direction = direction === 'ascending' ? 'descending' : 'ascending';
        renderRoutes();
        return;
      }
      sortKey = key;
      direction = key === 'route' ? 'ascending' : 'descending';
      const wanted = API_SORT[key];
      if (!wanted || wanted === apiSort) {
        renderRoutes();
        return;
      }
      const mine = ++seq;
      const { proxyId, period } = current;
      setState('loading');
      try {
        const body = await ctx.request('GET', breakdownPath(proxyId, period, wanted));
        if (mine !== seq) return;
        clearError();
        takeBreakdown(body, wanted);
        setState('ready');
      } catch (err) {
        if (mine === seq) showError(err);
      }
    }

    // ------------------------------------------------------------- show

    async function show(proxyId, period) {
      const mine = ++seq;
      current = { proxyId, period };
      const hours = period.hours;
      ui.heading.textContent = (hours === 1 ? 'Last hour' : 'Last ' + hours + ' hours') + ', 5-minute steps';
      ui.window.textContent = hhmm(period.from) + ' to ' + hhmm(period.to) + ' UTC (' +
        new Date(period.from * 1000).toISOString().slice(0, 10) + (hours === 24 ? ' to ' +
        new Date(period.to * 1000).toISOString().slice(0, 10) : '') + ')' +
        (period.days ? '; choose 1 h or 6 h in Period to zoom in.' : '.');
      ui.routesNote.textContent = routesNote(period);
      ui.panel.dataset.proxyId = proxyId;
      ui.routes.dataset.startDate = period.start;
      ui.routes.dataset.endDate = period.end;
      ui.panel.hidden = false;
      setState('loading');
      const sort = API_SORT[sortKey] || apiSort;
      const seriesPath = base(proxyId) + '/series?from=' + instant(period.from) + '&to=' + instant(period.to) +
        '&step=5m';
      try {
        const [series, breakdown] = await Promise.all([
          ctx.request('GET', seriesPath),
          ctx.request('GET', breakdownPath(proxyId, period, sort)),
        ]);
        if (mine !== seq) return;
        clearError();
        renderSeries(series && series.points, period);
        takeBreakdown(breakdown, sort);
        setState('ready');
      } catch (err) {
        if (mine !== seq) return;
        destroyPlots();
        clearRoutes();
        showError(err);
      }
    }

    function clearRoutes() {
      rows = [];
      ui.body.replaceChildren();
      ui.table.hidden = true;
      ui.routesEmpty.hidden = true;
    }

    function hide() {
      seq += 1;
      current = null;
      destroyPlots();
      clearRoutes();
      clearError();
      ui.panel.hidden = true;
    }

    ui.table.addEventListener('click', (e) => {
      const button = e.target instanceof Element ? e.target.closest('button[data-sort]') : null;
      if (button) onSort(button.dataset.sort);
    });

    return { show, hide };
  }

  window.ProxyMetricsIncident = { create };
})();
