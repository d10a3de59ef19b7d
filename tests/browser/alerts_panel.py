"""The dashboard's "Alert rules" panel in the browser (part of dashboard_test.py).

Before the page opens, `seed_rules` creates a rule through the API (a webhook
receiver of this test on 127.0.0.1, which the local stack allows) and runs
`evaluate-alerts` once through the watcher's invoke API, so that the rule is
FIRING (every closed 5-minute window of the seeded week has requests) with a
`stateSince`. `check_alerts_panel` then, in the page: the rule is listed with
its state, since when and its fields; the form refuses bad input with the
API's message; a good rule is created, its `whsec_` secret shown once with a
copy button, and gone after a reload of the list; the rule is deleted through
the inline confirmation, and the API agrees each time. `check_scopes` signs
in with narrower tokens: read-only (no create/delete, and a note saying so)
and one that cannot read the rules (a clear message in the panel).
"""

import http.server
import json
import threading


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 204 to anything."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def rules(call, api, token, proxy):
    status, body = call(api, "GET", f"/proxies/{proxy}/alerts", token)
    assert status == 200, (status, body)
    return body, {a["alertId"]: a for a in json.loads(body)["alerts"]}


def seed_rules(call, api, token, proxy, hook_url):
    """One FIRING rule, made through the API; its id."""
    rule = {"name": "Traffic seen", "metric": "requestCount", "comparison": "above",
            "threshold": 1, "webhookUrl": hook_url}
    # A throw-away rule first: it also warms create, delete and list.
    status, body = call(api, "POST", f"/proxies/{proxy}/alerts", token, dict(rule, name="warm-up"))
    assert status == 201, (status, body)
    warm = json.loads(body)["alert"]["alertId"]
    status, body = call(api, "DELETE", f"/proxies/{proxy}/alerts/{warm}", token)
    assert status == 204, (status, body)
    status, body = call(api, "POST", f"/proxies/{proxy}/alerts", token, rule)
    assert status == 201, (status, body)
    alert_id = json.loads(body)["alert"]["alertId"]
    status, body = call(api, "POST", "/2015-03-31/functions/evaluate-alerts/invocations", body={})
    assert status == 200, (status, body)
    _, listed = rules(call, api, token, proxy)
    assert list(listed) == [alert_id], listed
    assert listed[alert_id]["state"] == "FIRING", listed[alert_id]
    return alert_id


def allow_http_errors(browser, status):
    """Chromium logs "Failed to load resource … status of N" for every non-2xx
    answer; the ones this test provokes on purpose are not problems."""
    browser.problems[:] = [p for p in browser.problems
                           if not (p.startswith("log (network)") and f"status of {status}" in p)]


async def wait_list(browser, count, what):
    await browser.wait_for("document.getElementById('alerts').dataset.state === 'ready' && "
                           f"document.querySelectorAll('#alerts-list .alert-item').length === {count}", what)


LISTED = """Array.from(document.querySelectorAll('#alerts-list .alert-item')).map((li) => ({
    id: li.dataset.alertId, state: li.dataset.state,
    badge: li.querySelector('.state-badge').textContent,
    name: li.querySelector('.alert-name').textContent,
    condition: li.querySelector('.alert-condition').textContent,
    windows: li.querySelector('.alert-windows').textContent,
    since: li.querySelector('.alert-since').textContent,
    sinceRaw: li.querySelector('.alert-since').dataset.stateSince,
    deletable: !!li.querySelector('.alert-delete'),
}))"""


def set_fields(values):
    """JS that sets the form's fields (by id) and dispatches `input`."""
    return "(() => {" + "".join(
        f"const e{i} = document.getElementById({json.dumps(k)}); e{i}.value = {json.dumps(v)};"
        f"e{i}.dispatchEvent(new Event('input', {{bubbles: true}}));"
        for i, (k, v) in enumerate(values.items())) + "})()"


async def check_alerts_panel(browser, call, check, api, token, proxy, hook_url, seeded, shot):
    # 1. The seeded rule, as the API has it.
    await wait_list(browser, 1, "the seeded alert rule")
    api_rule = rules(call, api, token, proxy)[1][seeded]
    [item] = await browser.js(LISTED)
    check(item["id"] == seeded and item["state"] == "FIRING" and item["badge"] == "Firing", f"listed: {item}")
    check(item["name"] == "Traffic seen" and item["condition"] == "Requests above 1", f"fields: {item}")
    check(item["windows"].startswith("1 of 1 window of 5 min"), f"windows: {item}")
    since = api_rule["stateSince"]
    check(item["sinceRaw"] == since, f"stateSince {item['sinceRaw']} != {since}")
    check(item["since"].startswith(f"Firing since {since[:10]} {since[11:19]} UTC ("), f"since: {item}")
    check(item["deletable"], "a user token may delete")

    # 2. The form, its defaults, and the API's refusal of a bad rule.
    await browser.js("document.getElementById('alerts-new').click()")
    form = await browser.js("""(() => { const v = (id) => document.getElementById(id).value; return {
        shown: !document.getElementById('alert-form').hidden,
        expanded: document.getElementById('alerts-new').getAttribute('aria-expanded'),
        focused: document.activeElement.id,
        defaults: [v('alert-metric'), v('alert-comparison'), v('alert-threshold'), v('alert-recovery'),
                   v('alert-window'), v('alert-breaching'), v('alert-evaluations'), v('alert-no-data')],
        unlabelled: Array.from(document.querySelectorAll('#alert-form input, #alert-form select'))
          .filter((e) => !document.querySelector('label[for="' + e.id + '"]')).map((e) => e.id),
    }; })()""")
    check(form["shown"] and form["expanded"] == "true" and form["focused"] == "alert-name", f"form: {form}")
    check(form["defaults"] == ["errorRate", "above", "5", "", "5", "1", "1", "noData"], f"defaults: {form}")
    check(not form["unlabelled"], f"fields without a label: {form['unlabelled']}")
    await browser.js(set_fields({"alert-name": "Errors over 5 %", "alert-recovery": "9",
                                 "alert-webhook": hook_url}))
    await browser.js("document.getElementById('alert-create').click()")
    await browser.wait_for("!document.getElementById('alert-form-error').hidden", "the API's refusal")
    refusal = await browser.js("""(() => { const b = document.getElementById('alert-form-error');
        return {status: b.dataset.status, kind: b.dataset.errorKind,
                message: document.getElementById('alert-form-error-message').textContent,
                formShown: !document.getElementById('alert-form').hidden}; })()""")
    check(refusal["status"] == "400" and refusal["kind"] == "INVALID_REQUEST", f"refusal: {refusal}")
    check("'recoveryThreshold' must not be above 'threshold'" in refusal["message"], f"message: {refusal}")
    check(refusal["formShown"], "the form stays open with the user's values")
    allow_http_errors(browser, 400)
    check(list(rules(call, api, token, proxy)[1]) == [seeded], "a refused rule is not created")
    await shot("alerts-form-error")

    # 3. A good rule: created, its secret shown once with a copy button.
    await browser.js(set_fields({"alert-recovery": "4", "alert-window": "15", "alert-evaluations": "3",
                                 "alert-breaching": "2", "alert-no-data": "ok"}))
    await browser.js("document.getElementById('alert-create').click()")
    await browser.wait_for("!document.getElementById('alert-secret').hidden", "the new rule's secret")
    await wait_list(browser, 2, "the new rule in the list")
    shown = await browser.js("""(() => { const q = (id) => document.getElementById(id); return {
        secret: q('alert-secret-value').value, alertId: q('alert-secret').dataset.alertId,
        rule: q('alert-secret-rule').textContent, warning: q('alert-secret').textContent,
        copy: q('alert-secret-copy').textContent, copyVisible: q('alert-secret-copy').offsetParent !== null,
        readOnly: q('alert-secret-value').readOnly, formHidden: q('alert-form').hidden,
        label: document.querySelector('label[for="alert-secret-value"]').textContent}; })()""")
    secret, created = shown["secret"], shown["alertId"]
    check(secret.startswith("whsec_") and len(secret) > 30 and shown["readOnly"], f"secret: {shown}")
    check(shown["copy"] == "Copy" and shown["copyVisible"], f"copy button: {shown}")
    check("shown only this once" in shown["warning"], f"warning: {shown['warning']}")
    check(shown["rule"] == '"Errors over 5 %"' and shown["formHidden"], f"after create: {shown}")
    body, listed = rules(call, api, token, proxy)
    check(set(listed) == {seeded, created}, f"API list: {list(listed)}")
    new = listed[created]
    check((new["name"], new["metric"], new["comparison"], new["threshold"], new["recoveryThreshold"],
           new["windowMinutes"], new["breaching"], new["evaluations"], new["noData"], new["webhookUrl"])
          == ("Errors over 5 %", "errorRate", "above", 5, 4, 15, 2, 3, "ok", hook_url), f"created: {new}")
    check(secret not in body and "secret" not in body, "the list never carries the secret")
    page_item = [i for i in await browser.js(LISTED) if i["id"] == created]
    check(page_item and page_item[0]["state"] == "OK" and page_item[0]["badge"] == "OK", f"new: {page_item}")
    check(page_item[0]["condition"] == "Error rate above 5 % (resolves at or below 4 %)", f"new: {page_item}")
    check(page_item[0]["windows"] == "2 of 3 windows of 15 min · no data counts as OK", f"new: {page_item}")
    # Headless Chromium may refuse the clipboard: either way the page says what happened.
    await browser.js("document.getElementById('alert-secret-copy').click()")
    await browser.wait_for("document.getElementById('alert-secret-status').textContent !== ''", "the copy status")
    await shot("alerts")

    # 4. Reloading the list forgets the secret.
    await browser.js("document.getElementById('refresh').click()")
    await browser.wait_for("document.body.dataset.state === 'ready'", "the page after Refresh")
    await wait_list(browser, 2, "the list after Refresh")
    gone = await browser.js(f"""(() => ({{hidden: document.getElementById('alert-secret').hidden,
        inPage: document.documentElement.outerHTML.includes({json.dumps(secret)}),
        inValue: document.getElementById('alert-secret-value').value}}))()""")
    check(gone == {"hidden": True, "inPage": False, "inValue": ""}, f"secret after reload: {gone}")

    # 5. Delete through the inline confirmation ("Keep" first, then for real).
    row = f"#alerts-list .alert-item[data-alert-id={json.dumps(created)}]"
    await browser.js(f"document.querySelector('{row} .alert-delete').click()")
    asked = await browser.js(f"""(() => ({{confirm: !document.querySelector('{row} .alert-confirm').hidden,
        question: document.querySelector('{row} .alert-confirm-question').textContent,
        focused: document.activeElement.className}}))()""")
    check(asked["confirm"] and 'Delete "Errors over 5 %"?' in asked["question"], f"confirmation: {asked}")
    check("alert-confirm-cancel" in asked["focused"], f"focus on Keep: {asked}")
    await browser.js(f"document.querySelector('{row} .alert-confirm-cancel').click()")
    check(created in rules(call, api, token, proxy)[1], "Keep keeps the rule")
    await browser.js(f"document.querySelector('{row} .alert-delete').click()")
    await browser.js(f"document.querySelector('{row} .alert-confirm-delete').click()")
    await wait_list(browser, 1, "the list without the deleted rule")
    check([i["id"] for i in await browser.js(LISTED)] == [seeded], "the page lists only the seeded rule")
    check(list(rules(call, api, token, proxy)[1]) == [seeded], "the API has only the seeded rule")
    check(await browser.js("document.getElementById('alerts-error').hidden"), "no error in the panel")


async def sign_in(browser, token, state):
    await browser.js("document.getElementById('forget-token').click()")
    await browser.wait_for("document.body.dataset.state === 'token'", "the token form")
    await browser.js("document.getElementById('token-input').focus()")
    await browser.send("Input.insertText", {"text": token}, session=True)
    await browser.js("document.getElementById('token-submit').click()")
    await browser.wait_for(f"document.body.dataset.state === '{state}'", f"the page ({state})")


async def check_scopes(browser, check, read_only_token, write_only_token, seeded):
    # metrics:read only: the rules, no way to change them, and a note saying why.
    await sign_in(browser, read_only_token, "ready")
    await wait_list(browser, 1, "the rules for a read-only token")
    ro = await browser.js("""(() => ({
        add: document.getElementById('alerts-new').hidden,
        note: document.getElementById('alerts-note').hidden ? '' : document.getElementById('alerts-note').textContent,
        deletes: document.querySelectorAll('#alerts-list .alert-delete').length,
        ids: Array.from(document.querySelectorAll('#alerts-list .alert-item')).map((li) => li.dataset.alertId)}))()""")
    check(ro["add"] and ro["deletes"] == 0 and ro["ids"] == [seeded], f"read-only token: {ro}")
    check("proxies:write" in ro["note"], f"read-only note: {ro}")
    # metrics:write only: the API refuses the list; the panel says which scope it needs.
    await sign_in(browser, write_only_token, "error")
    await browser.wait_for("document.getElementById('alerts').dataset.state === 'error'", "the panel's refusal")
    refused = await browser.js("""(() => ({
        panel: !document.getElementById('alerts').hidden,
        status: document.getElementById('alerts-error').dataset.status,
        hint: document.getElementById('alerts-error-hint').textContent,
        items: document.querySelectorAll('#alerts-list .alert-item').length}))()""")
    check(refused["panel"] and refused["status"] == "403" and refused["items"] == 0, f"refused: {refused}")
    check("metrics:read" in refused["hint"], f"refusal hint: {refused}")
    allow_http_errors(browser, 403)
