"""The dashboard's incident view (incident.js), driven by dashboard_test.py.

- The week proxy (pro) carries a few routes: in the 7-day period, the 5-minute
  chart holds the last 24 hours (288 points, their requests those the test
  recorded in that window) and the routes table the API's breakdown of the week.
- A proxy of a free-tier user (cardinality cap 20) records, within the last
  hour, events on 24 distinct routes and some with no route: in the "Last
  hour" period the chart has 12 points with every request, the table lists
  the API's values, "other routes (past the cap)" with the distinct count of
  `other`, and "no route"; clicking a header sorts (asking the API for its
  top routes by that figure), clicking it again flips the order, aria-sort
  following. A 6-hour window that crosses midnight (the page's clock set to
  02:00 UTC) lists the routes of yesterday and today, and says so.
  Screenshots target/dashboard-incident*.png.
"""

import asyncio
import datetime as dt
import json
import random

import alerts_panel

# The week proxy's routes, most frequent first.
WEEK_ROUTES = ["/api/orders/:id", "/api/cart", "/api/search", "/api/users/:id", "/health", "/static/:id"]
WEEK_WEIGHTS = [30, 22, 18, 12, 10, 8]
FREE_ROUTES = 24  # past the free tier's cap of 20 distinct routes a day


def week_route(rng: random.Random):
    return rng.choices(WEEK_ROUTES, WEEK_WEIGHTS)[0]


def iso(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def free_events(now: dt.datetime):
    """Events between 2 and 48 minutes ago (inside any "last hour" window the
    page computes within the next ten minutes). Route i has its own request
    count, error rate and latency, so that each sort gives another order.
    Every route is recorded twice, 2-9 and 40-47 minutes ago: whatever the
    hour, one of the two runs lies wholly on one UTC day, so a day holds all
    24 routes and the free tier's cap of 20 is passed (the cap is per day)."""
    events = []
    for run, minutes in enumerate((2, 40)):
        for i in range(FREE_ROUTES):
            requests = 10 + (i * 37) % 90
            errors = (i * 7) % 11
            latency = 5.0 + ((i * 53) % 97) * 3
            at = now - dt.timedelta(minutes=minutes, seconds=18 * i)
            events.append({"eventType": "request", "timestamp": iso(at), "healthy": True,
                           "dimensions": {"route": f"/v1/route-{i:02d}/:id"},
                           "metrics": {"requestCount": requests + run, "successCount": requests + run - errors,
                                       "errorCount": errors,
                                       "latencySamplesMs": [latency, latency * 1.2, latency * 0.9]}})
    for k in range(3):  # no route: counted under "(none)"
        events.append({"eventType": "request", "timestamp": iso(now - dt.timedelta(minutes=5 + 10 * k)),
                       "healthy": True,
                       "metrics": {"requestCount": 40, "successCount": 39, "errorCount": 1,
                                   "latencySamplesMs": [12.0, 15.0]}})
    return events


def seed_free(call, api, token, proxy, now):
    status, body = call(api, "POST", "/proxies", token, {"proxyId": proxy, "name": "Routes (free tier)"})
    assert status == 201, (status, body)
    events = free_events(now)
    status, body = call(api, "POST", f"/proxy/metrics/{proxy}/record", token, {"events": events},
                        {"Producer-Id": "browser-test-routes", "Producer-Sequence": "0"})
    assert status == 201, (status, body[:300])
    return sum(e["metrics"]["requestCount"] for e in events)


def breakdown(call, api, token, proxy, start, end, sort):
    path = f"/proxy/metrics/{proxy}/breakdown?by=route&startDate={start}&endDate={end}&sort={sort}&limit=25"
    status, body = call(api, "GET", path, token)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


ROWS = """(() => {
  const routes = document.getElementById('routes');
  const sorted = Array.from(document.querySelectorAll('#routes-table thead th[aria-sort]'));
  return {
    sort: routes.dataset.sort, direction: routes.dataset.direction, apiSort: routes.dataset.apiSort,
    start: routes.dataset.startDate, end: routes.dataset.endDate,
    otherDistinct: routes.dataset.otherDistinct,
    ariaSort: sorted.map((th) => th.dataset.sort + ':' + th.getAttribute('aria-sort')),
    buttons: Array.from(document.querySelectorAll('#routes-table thead th button')).length,
    note: document.getElementById('routes-note').textContent,
    rows: Array.from(document.querySelectorAll('#routes-body tr.route-row')).map((tr) => ({
      value: tr.dataset.value, requests: Number(tr.dataset.requests), errors: Number(tr.dataset.errors),
      errorRate: tr.dataset.errorRate === '' ? null : Number(tr.dataset.errorRate),
      p95: tr.dataset.p95 === '' ? null : Number(tr.dataset.p95),
      label: tr.querySelector('th').textContent})),
  };
})()"""

CHART = """(() => {
  const c = document.getElementById('incident-charts');
  return {points: Number(c.dataset.points), requests: Number(c.dataset.requests), from: c.dataset.from,
          to: c.dataset.to, step: c.dataset.step,
          canvases: Array.from(document.querySelectorAll('#incident-charts .chart')).map((el) =>
            el.querySelectorAll('.uplot canvas').length),
          heading: document.getElementById('incident-heading').textContent};
})()"""


def parse(instant: str) -> dt.datetime:
    return dt.datetime.fromisoformat(instant.replace("Z", "+00:00"))


def ordered(rows, key, descending):
    """Whether rows follow `key` (rows without the figure last)."""
    have = [r[key] for r in rows if r[key] is not None]
    missing_last = all(r[key] is None for r in rows[len(have):])
    pairs = zip(have, have[1:])
    return missing_last and all((a >= b) if descending else (a <= b) for a, b in pairs)


async def wait_ready(browser, extra, what):
    await browser.wait_for("document.getElementById('incident').dataset.state === 'ready'" + extra, what)


async def check_week(browser, call, check, api, token, proxy, events):
    """The 7-day period on the week proxy: the last 24 hours at 5-minute steps and the week's routes."""
    await wait_ready(browser, " && document.getElementById('incident-charts').dataset.points === '288'",
                     "the 24-hour chart")
    chart = await browser.js(CHART)
    start, end = parse(chart["from"]), parse(chart["to"])
    check(end - start == dt.timedelta(hours=24) and chart["step"] == "5m", f"24-hour window: {chart}")
    want = sum(e["metrics"]["requestCount"] for e in events if start <= parse(e["timestamp"]) < end)
    check(chart["requests"] == want, f"the 24-hour chart holds {chart['requests']} requests, recorded {want}")
    check(chart["canvases"] == [1, 1, 1], f"one uPlot per 5-minute chart: {chart}")
    page = await browser.js(ROWS)
    api_rows = breakdown(call, api, token, proxy, page["start"], page["end"], "requests")
    check(sorted(r["value"] for r in page["rows"]) == sorted(v["value"] for v in api_rows["values"])
          == sorted(WEEK_ROUTES), f"the week's routes: {page['rows']} / {api_rows['values']}")
    check(ordered(page["rows"], "requests", True), f"by requests: {page['rows']}")
    api_requests = {v["value"]: v["requestCount"] for v in api_rows["values"]}
    check({r["value"]: r["requests"] for r in page["rows"]} == api_requests, f"requests per route: {page['rows']}")
    check(page["ariaSort"] == ["requests:descending"] and page["buttons"] == 4, f"headers: {page}")
    check(page["start"] in page["note"] and page["end"] in page["note"], f"the routes' days said: {page['note']}")


async def check_free(browser, call, check, api, token, proxy, recorded, shot, sign_in):
    """The last hour of the free-tier proxy: 12 points, the routes past the cap, sorting."""
    # The page the scope checks left refused (403): no incident view; the 403s it
    # provoked are expected (the incident view asks too, beside the page).
    check(await browser.js("document.getElementById('incident').hidden"), "the incident view hidden on a refusal")
    alerts_panel.allow_http_errors(browser, 403)
    await sign_in(browser, token, "ready")
    await browser.js("""(() => { const s = document.getElementById('period-select');
        s.value = '1h'; s.dispatchEvent(new Event('change')); })()""")
    await wait_ready(browser, " && document.getElementById('incident-charts').dataset.points === '12'",
                     "the 1-hour chart")
    await browser.wait_for("document.body.dataset.state === 'ready'", "the page (1 h)")
    chart = await browser.js(CHART)
    check(chart["requests"] == recorded, f"the last hour holds {chart['requests']} requests, recorded {recorded}")
    check(parse(chart["to"]) - parse(chart["from"]) == dt.timedelta(hours=1), f"1-hour window: {chart}")
    check(chart["heading"].startswith("Last hour"), f"heading: {chart['heading']}")
    page = await browser.js(ROWS)
    # The days the table covers: the UTC day(s) the hour touches, and the note says so.
    check(page["start"] == chart["from"][:10], f"routes start on the window's day: {page}")
    check(page["end"] == (parse(chart["to"]) - dt.timedelta(seconds=1)).date().isoformat(), f"routes end: {page}")
    check(page["start"] in page["note"] and "whole UTC days" in page["note"], f"routes note: {page['note']}")

    api_rows = breakdown(call, api, token, proxy, page["start"], page["end"], "requests")
    values = [v["value"] for v in api_rows["values"]]
    check("__other__" in values and "(none)" in values, f"the API has __other__ and (none): {values}")
    # At most the cap a day (two days, when the hour crosses midnight, may keep different routes).
    days = 1 if page["start"] == page["end"] else 2
    check(len([v for v in values if v not in ("__other__", "(none)")]) <= 20 * days, f"the cap: {values}")
    check(sorted(r["value"] for r in page["rows"]) == sorted(values), f"rows as the API: {page['rows']} / {values}")
    check(sum(r["requests"] for r in page["rows"]) == recorded, f"rows add up to {recorded}: {page['rows']}")
    by_value = {r["value"]: r for r in page["rows"]}
    distinct = api_rows["other"]["distinctValues"]
    check(distinct >= FREE_ROUTES - 20, f"other's distinct routes: {api_rows['other']}")
    check(by_value["__other__"]["label"] == f"other routes (past the cap) {distinct} distinct routes"
          and page["otherDistinct"] == str(distinct), f"the __other__ row: {by_value['__other__']}")
    check(by_value["(none)"]["label"] == "no route", f"the (none) row: {by_value['(none)']}")
    check(ordered(page["rows"], "requests", True), f"by requests: {page['rows']}")
    await shot("incident")

    # p95: the API's top routes by p95, highest first; again: lowest first.
    await browser.js("document.querySelector('#routes-table button[data-sort=p95]').click()")
    await wait_ready(browser, " && document.getElementById('routes').dataset.apiSort === 'p95'", "sort by p95")
    page = await browser.js(ROWS)
    by_p95 = breakdown(call, api, token, proxy, page["start"], page["end"], "p95")
    check(sorted(r["value"] for r in page["rows"]) == sorted(v["value"] for v in by_p95["values"]),
          f"the API's top routes by p95: {page['rows']}")
    check(ordered(page["rows"], "p95", True) and page["ariaSort"] == ["p95:descending"], f"by p95: {page}")
    check(page["rows"][0]["p95"] == max(r["p95"] for r in page["rows"] if r["p95"] is not None), "p95 top")
    await browser.js("document.querySelector('#routes-table button[data-sort=p95]').click()")
    page = await browser.js(ROWS)
    check(ordered(page["rows"], "p95", False) and page["ariaSort"] == ["p95:ascending"], f"p95 ascending: {page}")
    # Error rate, then the route name (no API sort: A to Z here).
    await browser.js("document.querySelector('#routes-table button[data-sort=errorRate]').click()")
    await wait_ready(browser, " && document.getElementById('routes').dataset.apiSort === 'errorRate'",
                     "sort by error rate")
    page = await browser.js(ROWS)
    check(ordered(page["rows"], "errorRate", True) and page["ariaSort"] == ["errorRate:descending"],
          f"by error rate: {page}")
    await browser.js("document.querySelector('#routes-table button[data-sort=route]').click()")
    page = await browser.js(ROWS)
    names = [r["value"] for r in page["rows"]]
    check(names == sorted(names) and page["ariaSort"] == ["route:ascending"] and page["apiSort"] == "errorRate",
          f"by route: {page}")
    # Keyboard: the header buttons are focusable and Enter sorts.
    await browser.js("document.querySelector('#routes-table button[data-sort=requests]').focus()")
    await browser.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Enter", "code": "Enter",
                                                  "windowsVirtualKeyCode": 13, "text": "\r"}, session=True)
    await browser.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Enter", "code": "Enter",
                                                  "windowsVirtualKeyCode": 13}, session=True)
    await wait_ready(browser, " && document.getElementById('routes').dataset.apiSort === 'requests'",
                     "sort by requests (keyboard)")
    page = await browser.js(ROWS)
    check(ordered(page["rows"], "requests", True) and page["ariaSort"] == ["requests:descending"],
          f"by requests again: {page}")

    # A 6-hour window that crosses midnight: the routes of yesterday and today, and the note
    # says so. The page's clock is set to 02:00 UTC (today's, or yesterday's before 02:01).
    real_now = dt.datetime.now(dt.timezone.utc)
    fake = real_now.replace(hour=2, minute=0, second=0, microsecond=0)
    if fake > real_now - dt.timedelta(minutes=1):
        fake -= dt.timedelta(days=1)
    await browser.js(f"""(() => {{
        const Real = Date, fake = {int(fake.timestamp() * 1000)};
        class FakeDate extends Real {{
          constructor(...a) {{ if (a.length) super(...a); else super(fake); }}
          static now() {{ return fake; }}
        }}
        window.RealDate = Real; window.Date = FakeDate;
        const s = document.getElementById('period-select');
        s.value = '6h'; s.dispatchEvent(new Event('change')); }})()""")
    await wait_ready(browser, " && document.getElementById('incident-charts').dataset.points === '72'",
                     "the 6-hour chart")
    await browser.js("window.Date = window.RealDate")
    chart, page = await browser.js(CHART), await browser.js(ROWS)
    today, yesterday = fake.date().isoformat(), (fake - dt.timedelta(days=1)).date().isoformat()
    check((chart["from"], chart["to"]) == (iso(fake - dt.timedelta(hours=6))[:19] + "Z", iso(fake)[:19] + "Z"),
          f"the 6-hour window before {fake}: {chart}")
    check((page["start"], page["end"]) == (yesterday, today), f"routes of yesterday and today: {page}")
    check(f"{yesterday} and {today}" in page["note"] and "cross midnight" in page["note"],
          f"the note says both days: {page['note']}")
    await browser.js("""(() => { const s = document.getElementById('period-select');
        s.value = '1h'; s.dispatchEvent(new Event('change')); })()""")
    await wait_ready(browser, f" && document.getElementById('incident-charts').dataset.requests === '{recorded}'",
                     "the last hour again")

    # The phone: one column, the table within the width.
    await browser.viewport(390, 844, True)
    await browser.wait_for("""Array.from(document.querySelectorAll('#incident .chart')).every((c) =>
        Math.abs(c.querySelector('canvas').getBoundingClientRect().width - c.clientWidth) < 2)""",
                           "the 5-minute charts to fit the phone width")
    fit = await browser.js("""(() => ({page: document.documentElement.scrollWidth - window.innerWidth,
        table: document.getElementById('routes-table').scrollWidth -
               document.querySelector('#routes .table-wrap').clientWidth}))()""")
    check(fit["page"] <= 0 and fit["table"] <= 0, f"the phone layout scrolls sideways: {fit}")
    await asyncio.sleep(0.3)
    await shot("incident-phone")
    await browser.viewport(1280, 800, False)
