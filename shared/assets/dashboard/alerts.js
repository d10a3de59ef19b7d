/*
 * Proxy metrics dashboard: the "Alert rules" panel of the chosen proxy.
 *
 * Lists the proxy's rules (GET /proxies/{id}/alerts) with their state and
 * since when, creates one from a form (POST; the `whsec_` secret of the answer
 * is shown once, then forgotten) and deletes one after an inline confirmation
 * (DELETE). Same rules as app.js: a classic ES2020 script, no inline styles,
 * API text written with textContent only. It never sees the token: app.js
 * hands it a `request` function that adds it.
 *
 * Loaded before app.js, it only defines `window.ProxyMetricsAlerts`; app.js
 * calls `create(context)` and then `show(proxyId, label)` / `hide()`.
 */
(function () {
  'use strict';

  const METRICS = {
    errorRate: { label: 'Error rate', unit: ' %' },
    p95LatencyMs: { label: 'p95 latency', unit: ' ms' },
    p99LatencyMs: { label: 'p99 latency', unit: ' ms' },
    averageLatencyMs: { label: 'Average latency', unit: ' ms' },
    requestCount: { label: 'Requests', unit: '' },
    uptimePercentage: { label: 'Uptime', unit: ' %' },
  };
  const STATES = {
    OK: { className: 'state-ok', text: 'OK' },
    FIRING: { className: 'state-firing', text: 'Firing' },
    NO_DATA: { className: 'state-no-data', text: 'No data' },
  };
  const NO_DATA_TEXT = { ok: 'OK', breaching: 'breaching', noData: 'no data' };

  const $ = (id) => document.getElementById(id);

  function create(ctx) {
    const ui = {
      panel: $('alerts'),
      add: $('alerts-new'),
      note: $('alerts-note'),
      error: $('alerts-error'),
      errorMessage: $('alerts-error-message'),
      errorHint: $('alerts-error-hint'),
      secret: $('alert-secret'),
      secretRule: $('alert-secret-rule'),
      secretValue: $('alert-secret-value'),
      secretCopy: $('alert-secret-copy'),
      secretDone: $('alert-secret-done'),
      secretStatus: $('alert-secret-status'),
      form: $('alert-form'),
      formError: $('alert-form-error'),
      formErrorMessage: $('alert-form-error-message'),
      formErrorHint: $('alert-form-error-hint'),
      create: $('alert-create'),
      cancel: $('alert-cancel'),
      empty: $('alerts-empty'),
      list: $('alerts-list'),
    };
    if (!ui.panel) return { show() {}, hide() {} };

    let proxyId = null;
    let proxyName = '';
    let canWrite = true;
    let listSeq = 0;

    // ------------------------------------------------------------ helpers

    function fmtNumber(v) {
      if (typeof v !== 'number' || !Number.isFinite(v)) return '—';
      return String(Math.round(v * 1000) / 1000);
    }

    function fmtValue(metric, v) {
      const m = METRICS[metric];
      return fmtNumber(v) + (m && fmtNumber(v) !== '—' ? m.unit : '');
    }

    function path(suffix) {
      return '/proxies/' + encodeURIComponent(proxyId) + '/alerts' + (suffix || '');
    }

    // What to say about a failed alerts call: the API's words (through
    // app.js) and, for refusals, which scope this panel needs.
    function describe(err, writing) {
      const words = ctx.describeError(err);
      const status = err instanceof ctx.ApiError && err.kind === 'http' ? err.status : 0;
      if (status === 403) {
        words.hint = writing
          ? 'Creating and deleting alert rules needs a token with the proxies:write scope for this proxy.'
          : 'Reading alert rules needs a token with the metrics:read scope for this proxy.';
      } else if (status === 404 && !writing) {
        words.hint = 'The proxy does not exist or is not yours: press Refresh to read the list again.';
      } else if (status === 404) {
        words.hint = 'The rule is already gone (deleted elsewhere?): the list has been read again.';
      } else if (status === 400) {
        words.hint = 'Correct the field named above and create the rule again.';
      } else if (status === 409) {
        words.hint = 'Delete a rule you no longer need, or use a higher tier.';
      } else if (status === 0 || status === 429 || status >= 500) {
        // The panel has no Retry button of its own: say what to press instead.
        words.hint = writing
          ? 'Press Refresh to see whether it was done, then try again in a moment.'
          : 'Press Refresh in a moment to read the rules again.';
      }
      return words;
    }

    function isUnauthorized(err) {
      return err instanceof ctx.ApiError && err.kind === 'http' && err.status === 401;
    }

    function showBox(box, messageNode, hintNode, err, writing) {
      const { message, hint } = describe(err, writing);
      messageNode.textContent = message;
      hintNode.textContent = hint;
      const kind = err instanceof ctx.ApiError && err.kind === 'http' && err.body &&
        typeof err.body.error === 'string' && /^[A-Z_]{1,64}$/.test(err.body.error) ? err.body.error : '';
      box.dataset.status = err instanceof ctx.ApiError ? String(err.status || '') : '';
      box.dataset.errorKind = kind;
      box.hidden = false;
    }

    function hideBox(box, messageNode, hintNode) {
      box.hidden = true;
      messageNode.textContent = '';
      hintNode.textContent = '';
      delete box.dataset.status;
      delete box.dataset.errorKind;
    }

    function clearSecret() {
      ui.secretValue.value = '';
      ui.secretRule.textContent = '';
      ui.secretStatus.textContent = '';
      ui.secret.hidden = true;
    }

    function closeForm() {
      ui.form.hidden = true;
      ui.add.setAttribute('aria-expanded', 'false');
      hideBox(ui.formError, ui.formErrorMessage, ui.formErrorHint);
    }

    // ------------------------------------------------------------ the list

    function describeCondition(rule) {
      const metric = METRICS[rule.metric] ? METRICS[rule.metric].label : String(rule.metric);
      let text = metric + ' ' + (rule.comparison === 'below' ? 'below ' : 'above ') +
        fmtValue(rule.metric, rule.threshold);
      if (typeof rule.recoveryThreshold === 'number' && rule.recoveryThreshold !== rule.threshold) {
        text += ' (resolves ' + (rule.comparison === 'below' ? 'at or above ' : 'at or below ') +
          fmtValue(rule.metric, rule.recoveryThreshold) + ')';
      }
      return text;
    }

    function describeWindows(rule) {
      return rule.breaching + ' of ' + rule.evaluations + ' window' + (rule.evaluations === 1 ? '' : 's') +
        ' of ' + rule.windowMinutes + ' min · no data counts as ' + (NO_DATA_TEXT[rule.noData] || rule.noData);
    }

    function line(className, text) {
      const p = document.createElement('p');
      p.className = className;
      p.textContent = text;
      return p;
    }

    function ruleItem(rule) {
      const state = STATES[rule.state] || { className: 'state-unknown', text: String(rule.state) };
      const item = document.createElement('li');
      item.className = 'alert-item';
      item.dataset.alertId = rule.alertId;
      item.dataset.state = String(rule.state);

      const head = document.createElement('div');
      head.className = 'alert-item-head';
      const name = document.createElement('h3');
      name.className = 'alert-name';
      name.textContent = ctx.cleanMessage(rule.name) || rule.alertId;
      const badge = document.createElement('span');
      badge.className = 'state-badge ' + state.className;
      badge.textContent = state.text;
      head.append(name, badge);

      const since = ctx.fmtInstant(rule.stateSince);
      const sinceLine = line('alert-since', since
        ? state.text + ' since ' + since + ' (' + ctx.fmtAgo(rule.stateSince) + ')'
        : state.text);
      sinceLine.dataset.stateSince = typeof rule.stateSince === 'string' ? rule.stateSince : '';

      item.append(head, line('alert-condition', describeCondition(rule)),
        line('alert-windows', describeWindows(rule)), sinceLine);
      const evaluated = ctx.fmtInstant(rule.lastEvaluatedAt);
      item.append(line('alert-last', evaluated
        ? 'Last value ' + fmtValue(rule.metric, rule.lastValue) + ', evaluated ' + evaluated
        : 'Not evaluated yet'));
      item.append(line('alert-webhook', 'Webhook: ' + ctx.cleanMessage(rule.webhookUrl)));
      if (rule.webhookDisabled) {
        item.append(line('alert-disabled', 'Webhook disabled: the receiver answered 410 Gone.'));
      }
      if (canWrite) item.append(deleteControls(rule, name.textContent));
      return item;
    }

    // Delete asks first, in place: "Delete?" → Delete / Keep.
    function deleteControls(rule, label) {
      const actions = document.createElement('div');
      actions.className = 'alert-actions';
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'button-danger-outline alert-delete';
      remove.textContent = 'Delete';
      remove.setAttribute('aria-label', 'Delete rule ' + label);

      const confirm = document.createElement('div');
      confirm.className = 'alert-confirm';
      confirm.hidden = true;
      const question = line('alert-confirm-question', 'Delete "' + label + '"? Its webhook stops at once.');
      const yes = document.createElement('button');
      yes.type = 'button';
      yes.className = 'button-danger alert-confirm-delete';
      yes.textContent = 'Delete rule';
      const no = document.createElement('button');
      no.type = 'button';
      no.className = 'button-plain alert-confirm-cancel';
      no.textContent = 'Keep';
      confirm.append(question, yes, no);

      remove.addEventListener('click', () => {
        remove.hidden = true;
        confirm.hidden = false;
        no.focus();
      });
      no.addEventListener('click', () => {
        confirm.hidden = true;
        remove.hidden = false;
        remove.focus();
      });
      yes.addEventListener('click', () => deleteRule(rule.alertId, yes, no));
      actions.append(remove, confirm);
      return actions;
    }

    function render(alerts) {
      ui.list.replaceChildren(...alerts.map(ruleItem));
      ui.list.dataset.count = String(alerts.length);
      ui.empty.textContent = 'No alert rules for ' + proxyName + ' yet.' +
        (canWrite ? ' Press "New rule" to be told by webhook when a metric crosses a threshold.' : '');
      ui.empty.hidden = alerts.length > 0;
    }

    async function loadList() {
      const seq = ++listSeq;
      const forProxy = proxyId;
      ui.panel.dataset.state = 'loading';
      let body;
      try {
        body = await ctx.request('GET', path(), undefined);
      } catch (err) {
        if (seq !== listSeq || forProxy !== proxyId) return;
        if (isUnauthorized(err)) {
          ctx.onUnauthorized(err);
          return;
        }
        ui.list.replaceChildren();
        delete ui.list.dataset.count;
        ui.empty.hidden = true;
        showBox(ui.error, ui.errorMessage, ui.errorHint, err, false);
        ui.panel.dataset.state = 'error';
        return;
      }
      if (seq !== listSeq || forProxy !== proxyId) return;
      hideBox(ui.error, ui.errorMessage, ui.errorHint);
      const alerts = body && Array.isArray(body.alerts)
        ? body.alerts.filter((a) => a && typeof a.alertId === 'string')
        : [];
      render(alerts);
      ui.panel.dataset.state = 'ready';
    }

    async function deleteRule(alertId, yes, no) {
      yes.disabled = true;
      no.disabled = true;
      hideBox(ui.error, ui.errorMessage, ui.errorHint);
      try {
        await ctx.request('DELETE', path('/' + encodeURIComponent(alertId)), undefined);
      } catch (err) {
        if (isUnauthorized(err)) {
          ctx.onUnauthorized(err);
          return;
        }
        showBox(ui.error, ui.errorMessage, ui.errorHint, err, true);
        yes.disabled = false;
        no.disabled = false;
        if (!(err instanceof ctx.ApiError && err.status === 404)) return;
      }
      await loadList();
    }

    // ------------------------------------------------------------ the form

    function numberField(id) {
      const input = $(id);
      return input.value.trim() === '' ? undefined : Number(input.value);
    }

    function formBody() {
      const body = {
        name: $('alert-name').value.trim(),
        metric: $('alert-metric').value,
        comparison: $('alert-comparison').value,
        threshold: numberField('alert-threshold'),
        windowMinutes: Number($('alert-window').value),
        evaluations: numberField('alert-evaluations'),
        breaching: numberField('alert-breaching'),
        noData: $('alert-no-data').value,
        webhookUrl: $('alert-webhook').value.trim(),
      };
      const recovery = numberField('alert-recovery');
      if (recovery !== undefined) body.recoveryThreshold = recovery;
      return body;
    }

    async function onSubmit(event) {
      event.preventDefault();
      hideBox(ui.formError, ui.formErrorMessage, ui.formErrorHint);
      ui.create.disabled = true;
      let answer;
      try {
        answer = await ctx.request('POST', path(), formBody());
      } catch (err) {
        ui.create.disabled = false;
        if (isUnauthorized(err)) {
          ctx.onUnauthorized(err);
          return;
        }
        showBox(ui.formError, ui.formErrorMessage, ui.formErrorHint, err, true);
        ui.formError.focus();
        return;
      }
      ui.create.disabled = false;
      const rule = answer && answer.alert ? answer.alert : {};
      ui.form.reset();
      closeForm();
      if (answer && typeof answer.secret === 'string') {
        ui.secretRule.textContent = '"' + (ctx.cleanMessage(rule.name) || rule.alertId || 'the new rule') + '"';
        ui.secretValue.value = answer.secret;
        ui.secretStatus.textContent = '';
        ui.secret.dataset.alertId = typeof rule.alertId === 'string' ? rule.alertId : '';
        ui.secret.hidden = false;
        ui.secret.focus();
      }
      await loadList();
    }

    async function onCopy() {
      const secret = ui.secretValue.value;
      if (!secret) return;
      try {
        await navigator.clipboard.writeText(secret);
        ui.secretStatus.textContent = 'Copied to the clipboard.';
        return;
      } catch (_) {
        // No clipboard API (or no permission): fall back to the selection.
      }
      ui.secretValue.focus();
      ui.secretValue.select();
      let copied = false;
      try {
        copied = document.execCommand('copy');
      } catch (_) {
        copied = false;
      }
      ui.secretStatus.textContent = copied
        ? 'Copied to the clipboard.'
        : 'The browser did not allow copying: the secret is selected, copy it with Ctrl+C (or ⌘C).';
    }

    // ------------------------------------------------------------ wiring

    ui.add.addEventListener('click', () => {
      const opening = ui.form.hidden;
      if (!opening) {
        closeForm();
        return;
      }
      ui.form.hidden = false;
      ui.add.setAttribute('aria-expanded', 'true');
      $('alert-name').focus();
    });
    ui.cancel.addEventListener('click', () => {
      closeForm();
      ui.add.focus();
    });
    ui.form.addEventListener('submit', onSubmit);
    ui.secretCopy.addEventListener('click', onCopy);
    ui.secretValue.addEventListener('focus', () => ui.secretValue.select());
    ui.secretDone.addEventListener('click', () => {
      clearSecret();
      ui.add.focus();
    });
    ui.formError.tabIndex = -1;

    return {
      // Shows the panel for a proxy and reads its rules. Any secret still on
      // screen goes: it is shown once, right after its rule was created.
      show(id, label) {
        const changed = id !== proxyId;
        proxyId = id;
        proxyName = label || id;
        const scopes = ctx.tokenScopes();
        canWrite = !scopes || scopes.includes('proxies:write');
        clearSecret();
        if (changed || !canWrite) closeForm();
        ui.add.hidden = !canWrite;
        ui.note.textContent = canWrite ? '' : 'This token can list alert rules but not create or delete ' +
          'them: that needs a token with the proxies:write scope.';
        ui.note.hidden = canWrite;
        ui.panel.dataset.proxyId = id;
        ui.panel.hidden = false;
        loadList();
      },
      hide() {
        listSeq += 1;
        proxyId = null;
        clearSecret();
        closeForm();
        hideBox(ui.error, ui.errorMessage, ui.errorHint);
        ui.list.replaceChildren();
        ui.panel.hidden = true;
      },
    };
  }

  window.ProxyMetricsAlerts = { create };
})();
