#!/usr/bin/env python3
"""Browser test of the dashboard against a running stack (scripts/browser-test).

1. Records a week of events for a new proxy of a new user over the HTTP API
   (sequenced batches; one five-minute bucket after another, each on one of six
   routes; an outage on one day, a shorter one on another), running the scheduled aggregation once
   half-way so that the page reads materialised and pending state.
2. Starts Debian's headless Chromium and drives it over the DevTools protocol
   (a websocket; the only dependency is the `websockets` package): opens
   /dashboard, types the token, waits for `body[data-state=ready]`, picks the
   7-day period, and checks the DOM (the proxy, three uPlot charts, one
   uptime bar per day with the expected levels, the tiles).
3. Saves full-page screenshots at 1280x800 and at a phone's 390x844, checks
   that the phone layout does not scroll sideways, and fails on any console
   error, uncaught exception or Content-Security-Policy violation.
4. The "Alert rules" panel (alerts_panel.py): a rule made through the API is
   listed FIRING with since when; a rule is created through the form (the
   API's 400 shown first; the secret shown once, with a copy button) and
   deleted through the page, the API agreeing; narrower tokens get a note
   or a clear refusal in the panel. Screenshots target/dashboard-alerts*.png.
5. The incident view (incident_view.py): the week's last 24 hours at 5-minute
   steps and its routes; then a free-tier proxy's last hour, its routes past
   the cap of 20 as "other routes (past the cap)", and sorting by each header.
   Screenshots target/dashboard-incident*.png.

Usage: dashboard_test.py --api http://127.0.0.1:9000 [--secret S] [--out DIR]
"""

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import websockets

sys.dont_write_bytecode = True  # no __pycache__ beside the tests
import alerts_panel  # noqa: E402  (this folder; after the flag above)
import incident_view  # noqa: E402

CHROMIUM_FLAGS = [
    # What works on these machines (no sandbox as root, no network but loopback).
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--force-color-profile=srgb", "--lang=en-US",
    "--remote-debugging-port=0",
]
BUCKET = dt.timedelta(minutes=5)
TIMEOUT_S = 120


# ------------------------------------------------------------------ the API

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(secret: str, claims: dict) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def call(api: str, method: str, path: str, token=None, body=None, headers=None):
    request = urllib.request.Request(api + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data, timeout=600) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def iso(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def week_of_events(now: dt.datetime, outages):
    """One event per five-minute bucket, from just now back to 7 days ago
    (the API's late window, with a margin for the time seeding takes): a daily
    traffic curve, ~1.5 % errors, latency samples. Buckets inside `outages`
    report the proxy unhealthy."""
    rng = random.Random(16)
    routes = random.Random(21)  # apart, so that the figures above stay as they were
    oldest = now - dt.timedelta(days=7) + dt.timedelta(minutes=5)
    times = []
    at = now - dt.timedelta(seconds=1)
    while at >= oldest:
        times.append(at)
        at -= BUCKET
    for at in reversed(times):
        hour = at.hour + at.minute / 60
        requests = int(400 + 300 * math.sin((hour - 9) / 24 * 2 * math.pi) + rng.randint(0, 60))
        errors = int(requests * rng.uniform(0.005, 0.025))
        healthy = not any(a <= at < b for a, b in outages)
        if not healthy:
            errors = requests // 2
        samples = [round(rng.lognormvariate(3.4, 0.5), 1) for _ in range(8)]
        yield {"eventType": "request", "timestamp": iso(at), "healthy": healthy,
               "dimensions": {"route": incident_view.week_route(routes)},
               "metrics": {"requestCount": requests, "successCount": requests - errors,
                           "errorCount": errors, "latencySamplesMs": samples,
                           "dataTransferredBytes": requests * 5300,
                           "dataReceivedBytes": requests * 1900,
                           "connectionCount": requests // 8,
                           "concurrentConnections": 20 + requests // 40}}


def seed(api: str, token: str, proxy: str, now: dt.datetime):
    status, body = call(api, "POST", "/proxies", token, {"proxyId": proxy, "name": "Edge EU (browser test)"})
    assert status == 201, (status, body)
    day = lambda ago: (now - dt.timedelta(days=ago)).replace(hour=0, minute=0, second=0, microsecond=0)
    outages = [
        (day(3) + dt.timedelta(hours=3), day(3) + dt.timedelta(hours=4)),           # 12 buckets: < 99 %
        (day(5) + dt.timedelta(hours=14), day(5) + dt.timedelta(hours=14, minutes=5)),  # 1 bucket: < 99.9 %
    ]
    events = list(week_of_events(now, outages))
    batches = [events[i:i + 500] for i in range(0, len(events), 500)]
    for sequence, batch in enumerate(batches):
        status, body = call(api, "POST", f"/proxy/metrics/{proxy}/record", token, {"events": batch},
                            {"Producer-Id": "browser-test", "Producer-Sequence": str(sequence)})
        assert status == 201, (status, body[:300])
        if sequence == len(batches) // 2:
            status, body = call(api, "POST", "/2015-03-31/functions/aggregate-metrics/invocations",
                                body={"detail": {}})
            assert status == 200, (status, body)
    # The outage days, as the API tells them (for the uptime bars' levels).
    return {day(3).date().isoformat(): "bad", day(5).date().isoformat(): "warn"}, events


# ------------------------------------------------------------------ the browser

class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="dashboard-test-")
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.next_id = 0
        self.pending = {}
        self.problems = []  # console errors, exceptions, CSP violations

    async def start(self):
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or len(open(port_file).read().split()) < 2:
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("Chromium did not start: " + self.process.stderr.read().decode()[-2000:])
            await asyncio.sleep(0.1)
        port, path = open(port_file).read().split()[:2]
        self.ws = await websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=64 * 2**20)
        self.reader = asyncio.create_task(self.read())
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        self.session = attached["sessionId"]
        for domain in ["Page", "Runtime", "Log"]:
            await self.send(f"{domain}.enable", session=True)
        # Runs before the page's scripts (DevTools injections are not subject to the page's CSP).
        await self.send("Page.addScriptToEvaluateOnNewDocument", {"source": """
            document.addEventListener('securitypolicyviolation', (e) => {
              console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI);
            });"""}, session=True)

    async def read(self):
        async for message in self.ws:
            msg = json.loads(message)
            if "id" in msg and msg["id"] in self.pending:
                self.pending.pop(msg["id"]).set_result(msg)
            elif msg.get("method") == "Runtime.consoleAPICalled" and msg["params"]["type"] in ("error", "assert"):
                args = msg["params"]["args"]
                self.problems.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                self.problems.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
            elif msg.get("method") == "Log.entryAdded" and msg["params"]["entry"]["level"] == "error":
                entry = msg["params"]["entry"]
                self.problems.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}")

    async def send(self, method, params=None, session=False):
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(future, TIMEOUT_S)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def js(self, expression):
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression, what):
        # While the page loads, `document.body` may not exist yet: that is
        # "not yet", not a failure.
        guarded = f"(() => {{ try {{ return !!({expression}); }} catch (e) {{ return false; }} }})()"
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline:
            if await self.js(guarded):
                return
            await asyncio.sleep(0.2)
        state = await self.js("document.body.dataset.state + ': ' + document.getElementById('error-message').textContent")
        raise AssertionError(f"timed out waiting for {what} (page state {state})")

    async def viewport(self, width, height, mobile):
        await self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, session=True)

    async def screenshot(self, path):
        # The whole page, at the current width.
        metrics = await self.send("Page.getLayoutMetrics", session=True)
        size = metrics["cssContentSize"]
        shot = await self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
            session=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    async def close(self):
        try:
            await self.send("Browser.close")
        except Exception:
            pass
        self.reader.cancel()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


async def test_dashboard(args):
    now = dt.datetime.now(dt.timezone.utc)
    run = uuid.uuid4().hex[:10]
    proxy = f"edge-eu-{run}"
    token = hs256_token(args.secret, {"sub": f"browser-{run}", "tier": "pro",
                                      "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 3600})
    levels, events = seed(args.api, token, proxy, now)
    print(f"recorded {len(events)} events for {proxy} over 7 days")
    # A free-tier user's proxy (cap: 20 routes a day) with more routes than that in the last hour.
    free_token = hs256_token(args.secret, {"sub": f"browser-free-{run}", "tier": "free",
                                           "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 3600})
    free_proxy = f"routes-{run}"
    free_recorded = incident_view.seed_free(call, args.api, free_token, free_proxy, now)
    receiver = alerts_panel.Receiver()
    seeded_rule = alerts_panel.seed_rules(call, args.api, token, proxy, receiver.url)
    scoped = lambda scope: hs256_token(args.secret, {"sub": f"browser-{run}", "tier": "pro", "scope": scope,
                                                     "iat": int(now.timestamp()), "exp": int(now.timestamp()) + 3600})
    today = now.date()
    week = [(today - dt.timedelta(days=6 - i)).isoformat() for i in range(7)]
    # Warm the functions the page calls (the local stack compiles each on its first request).
    for path in ["/dashboard", "/proxies", f"/proxy/metrics/{proxy}/summary",
                 f"/proxy/metrics/{proxy}/daily?startDate={week[0]}&endDate={week[-1]}"]:
        status, _ = call(args.api, "GET", path, token)
        assert status == 200, (path, status)

    browser = Browser(args.chromium)

    async def shot(name):
        await asyncio.sleep(0.3)
        await browser.screenshot(os.path.join(args.out_dir, f"dashboard-{name}.png"))

    try:
        await browser.start()
        await browser.viewport(1280, 800, False)
        await browser.send("Page.navigate", {"url": args.api + "/dashboard"}, session=True)
        await browser.wait_for("document.body.dataset.state === 'token'", "the token form")
        # A person pastes the token and presses the button.
        await browser.js("document.getElementById('token-input').focus()")
        await browser.send("Input.insertText", {"text": token}, session=True)
        await browser.js("document.getElementById('token-submit').click()")
        await browser.wait_for("document.body.dataset.state === 'ready'", "the charts (30 days)")
        # The week the proxy recorded.
        await browser.js("""(() => { const s = document.getElementById('period-select');
            s.value = '7'; s.dispatchEvent(new Event('change')); })()""")
        await browser.wait_for("document.body.dataset.state === 'ready' && "
                               "document.getElementById('charts').dataset.days === '7'", "the charts (7 days)")
        page = await browser.js("""(() => {
            const q = (s) => Array.from(document.querySelectorAll(s));
            const charts = document.getElementById('charts');
            return {
              proxy: charts.dataset.proxyId,
              selected: document.getElementById('proxy-select').value,
              options: q('#proxy-select option').map((o) => o.textContent),
              start: charts.dataset.startDate, end: charts.dataset.endDate,
              charts: ['chart-requests', 'chart-error-rate', 'chart-latency'].map((id) =>
                document.querySelectorAll('#' + id + ' .uplot canvas').length),
              bars: q('#uptime-bars .uptime-bar').map((b) => ({date: b.dataset.date,
                level: b.dataset.level, uptime: b.dataset.uptime, requests: Number(b.dataset.requests)})),
              tiles: Object.fromEntries(q('#tiles .tile').map((t) =>
                [t.dataset.tile, t.querySelector('.tile-value').textContent])),
              errorShown: !document.getElementById('error').hidden,
            };
        })()""")
        check(page["proxy"] == proxy and page["selected"] == proxy, f"proxy shown: {page['proxy']}")
        check(any(proxy in o for o in page["options"]), f"proxy in the picker: {page['options']}")
        check((page["start"], page["end"]) == (week[0], week[-1]), f"range {page['start']}..{page['end']}")
        check(page["charts"] == [1, 1, 1], f"one uPlot canvas per chart: {page['charts']}")
        check([b["date"] for b in page["bars"]] == week, f"one uptime bar per day: {page['bars']}")
        for bar in page["bars"]:
            check(bar["requests"] > 0, f"{bar['date']} has requests")
            want = levels.get(bar["date"])
            if want:
                check(bar["level"] == want, f"{bar['date']} is {bar['level']}, expected {want}")
        check(sum(b["level"] == "good" for b in page["bars"]) >= 4, f"good days: {page['bars']}")
        check(len(page["tiles"]) == 8 and page["tiles"]["requests"] not in ("", "—"), f"tiles: {page['tiles']}")
        check(not page["errorShown"], "no error box")
        await incident_view.check_week(browser, call, check, args.api, token, proxy, events)
        await asyncio.sleep(0.3)  # let uPlot settle after the last draw
        await browser.screenshot(args.out_desktop)
        await alerts_panel.check_alerts_panel(browser, call, check, args.api, token, proxy, receiver.url,
                                              seeded_rule, shot)

        await browser.viewport(390, 844, True)
        await browser.wait_for("""Array.from(document.querySelectorAll('.chart')).every((c) =>
            Math.abs(c.querySelector('canvas').getBoundingClientRect().width - c.clientWidth) < 2)""",
                               "the charts to fit the phone width")
        overflow = await browser.js("document.documentElement.scrollWidth - window.innerWidth")
        check(overflow <= 0, f"the phone layout scrolls sideways by {overflow}px")
        await asyncio.sleep(0.3)
        await browser.screenshot(args.out_phone)
        # The alerts form open on the phone: one column, nothing sideways.
        await browser.js("document.getElementById('alerts-new').click()")
        overflow = await browser.js("document.documentElement.scrollWidth - window.innerWidth")
        check(overflow <= 0, f"the phone layout with the alerts form scrolls sideways by {overflow}px")
        await shot("alerts-phone")
        await alerts_panel.check_scopes(browser, check, scoped("metrics:read"), scoped("metrics:write"), seeded_rule)
        await browser.viewport(1280, 800, False)
        await incident_view.check_free(browser, call, check, args.api, free_token, free_proxy, free_recorded,
                                       shot, alerts_panel.sign_in)
        check(not browser.problems, "console errors, exceptions or CSP violations:\n  " + "\n  ".join(browser.problems))
    finally:
        await browser.close()
        receiver.close()


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--secret", default=os.environ.get("JWT_SECRET", "local-dev-secret-change-me"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", default="target")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    args.out_dir = os.path.abspath(args.out)
    args.out_desktop = os.path.abspath(os.path.join(args.out, "dashboard-screenshot.png"))
    args.out_phone = os.path.abspath(os.path.join(args.out, "dashboard-screenshot-phone.png"))
    try:
        asyncio.run(test_dashboard(args))
    except AssertionError as e:
        print(f"FAILED: dashboard in Chromium: {e}", file=sys.stderr)
        print("browser: 0 passed, 1 failed")
        sys.exit(1)
    print(f"screenshot: {args.out_desktop}")
    print(f"screenshot: {args.out_phone}")
    print("browser: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
