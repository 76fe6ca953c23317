// LLM spend dashboard: plain JS over the collector's query API.
// Money is shown from the API's exact decimal strings; floats are only used
// to draw the chart and the share bars.
(function () {
  'use strict';

  var TOKEN_KEY = 'llm-billing-token';
  var REFRESH_MS = 30000;
  var FILTER_KEYS = ['range', 'start', 'end', 'tenant', 'key', 'model', 'provider', 'metric', 'refresh'];
  var API_PARAM = { tenant: 'tenant_id', key: 'api_key_id', model: 'model', provider: 'provider' };
  var PRESETS = { '24h': 1, '7d': 7, '30d': 30, '90d': 90 };
  var TOP_SERIES = 6;
  var COLORS = ['#0969da', '#e16f24', '#1a7f37', '#8250df', '#bf3989', '#9a6700', '#8c959f'];

  var state = {
    token: null,
    filters: {},
    generation: 0,
    inflight: 0,
    timer: null,
    chart: null,
    series: null,
    tables: {},
    lastExport: null,
    forecastCharts: [],
    forecastSeries: null,
  };

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // ---------- URL <-> filters ----------
  function readUrl() {
    var p = new URLSearchParams(location.search);
    var f = {};
    FILTER_KEYS.forEach(function (k) { f[k] = p.get(k) || ''; });
    if (!f.range) f.range = f.start || f.end ? 'custom' : '30d';
    if (!f.metric) f.metric = 'cost';
    return f;
  }
  function writeUrl(push) {
    var p = new URLSearchParams();
    FILTER_KEYS.forEach(function (k) {
      var v = state.filters[k];
      if (!v) return;
      if (k === 'range' && v === '30d') return;
      if (k === 'metric' && v === 'cost') return;
      if ((k === 'start' || k === 'end') && state.filters.range !== 'custom') return;
      p.set(k, v);
    });
    var qs = p.toString();
    var url = location.pathname + (qs ? '?' + qs : '');
    if (url === location.pathname + location.search) return;
    if (push) history.pushState(null, '', url); else history.replaceState(null, '', url);
  }

  // ---------- time window ----------
  function iso(d) { return d.toISOString().replace(/\.\d{3}Z$/, 'Z'); }
  function timeWindow() {
    var f = state.filters;
    var now = new Date();
    now.setUTCSeconds(0, 0);
    var end = new Date(now.getTime() + 60000);
    if (f.range === 'custom') {
      var s = Date.parse(f.start), e = Date.parse(f.end);
      if (isNaN(s) || isNaN(e) || s >= e) {
        return { error: 'Custom range: give From and To as UTC times such as 2026-11-01T00:00:00Z, From before To.' };
      }
      return { start: f.start, end: f.end, ms: e - s };
    }
    if (f.range === 'mtd') {
      var m0 = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
      return { start: iso(m0), end: iso(end), ms: end - m0 };
    }
    if (f.range === 'prev') {
      var p0 = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
      var p1 = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
      return { start: iso(p0), end: iso(p1), ms: p1 - p0 };
    }
    var days = PRESETS[f.range] || 30;
    var start = new Date(end.getTime() - days * 86400000);
    return { start: iso(start), end: iso(end), ms: end - start };
  }

  // ---------- API ----------
  function ApiError(status, message) { this.status = status; this.message = message; }
  function api(path, params) {
    var qs = new URLSearchParams();
    Object.keys(params || {}).forEach(function (k) { if (params[k]) qs.set(k, params[k]); });
    var url = path + (qs.toString() ? '?' + qs.toString() : '');
    return fetch(url, { headers: { Authorization: 'Bearer ' + state.token }, cache: 'no-store' })
      .then(function (r) {
        return r.text().then(function (text) {
          var body = null;
          try { body = JSON.parse(text); } catch (e) { body = null; }
          if (!r.ok) {
            var msg = body && body.error ? body.error.message : r.status + ' ' + r.statusText;
            throw new ApiError(r.status, msg);
          }
          return body;
        });
      });
  }
  function filterParams(except) {
    var out = {};
    Object.keys(API_PARAM).forEach(function (k) {
      if (k !== except && state.filters[k]) out[API_PARAM[k]] = state.filters[k];
    });
    return out;
  }
  function summary(w, groupBy, except, extra) {
    var p = filterParams(except);
    p.start = w.start; p.end = w.end; p.group_by = groupBy;
    Object.keys(extra || {}).forEach(function (k) { p[k] = extra[k]; });
    return api('/v1/summary', p).then(function (b) { return b.groups; });
  }

  // ---------- formatting (display only) ----------
  function intFmt(n) { return Number(n).toLocaleString('en-US'); }
  function moneyFmt(s, currency) {
    var n = Number(s);
    var digits = Math.abs(n) >= 100 ? 2 : Math.abs(n) >= 1 ? 4 : 6;
    var t = n.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: digits });
    return currency ? t + ' ' + currency : t;
  }
  function compact(n) {
    n = Number(n);
    if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1) + 'B';
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (Math.abs(n) >= 1e3) return (n / 1e3).toFixed(1) + 'k';
    return String(+n.toPrecision(4));
  }
  function pct(part, whole) {
    if (!Number(whole)) return '0.0';
    return (100 * Number(part) / Number(whole)).toFixed(1);
  }
  function shortKey(k) { return k && k.length > 16 ? k.slice(0, 12) + '…' : k || '(none)'; }

  // ---------- KPIs ----------
  function setKpi(id, value, text) {
    var e = $(id);
    e.dataset.value = value;
    e.textContent = text;
    e.title = value;
  }
  // The total comes as one row per currency: counts add up across rows,
  // money never does (spend is listed per currency).
  var COUNTS = ['requests', 'error_requests', 'input_tokens', 'output_tokens', 'cache_read_tokens',
    'cache_write_tokens', 'reasoning_tokens', 'unpriced_requests', 'unpriced_input_tokens', 'unpriced_output_tokens'];
  function combineTotals(rows) {
    var t = { spend: [], byCurrency: {} };
    COUNTS.forEach(function (k) { t[k] = 0; });
    rows.forEach(function (r) {
      COUNTS.forEach(function (k) { t[k] += Number(r[k] || 0); });
      if (r.currency) { t.spend.push({ currency: r.currency, cost: r.cost }); t.byCurrency[r.currency] = r.cost; }
    });
    t.cost = t.spend.length === 1 ? t.spend[0].cost : t.spend.length ? '' : '0';
    t.currency = t.spend.length === 1 ? t.spend[0].currency : null;
    return t;
  }
  function renderKpis(total) {
    var t = combineTotals(total);
    var cur = t.currency || '';
    if (t.spend.length > 1) {
      setKpi('kpi-spend', t.spend.map(function (s) { return s.cost + ' ' + s.currency; }).join(' + '),
        t.spend.map(function (s) { return moneyFmt(s.cost, s.currency); }).join(' · '));
      $('kpi-spend').classList.add('multi');
      $('kpi-currency').textContent = t.spend.length + ' currencies, priced usage, never added';
    } else {
      setKpi('kpi-spend', t.cost, moneyFmt(t.cost));
      $('kpi-spend').classList.remove('multi');
      $('kpi-currency').textContent = cur ? cur + ', priced usage' : 'priced usage';
    }
    setKpi('kpi-requests', String(t.requests), intFmt(t.requests));
    $('kpi-requests-sub').textContent = intFmt(t.requests - t.unpriced_requests) + ' priced';
    setKpi('kpi-input-tokens', String(t.input_tokens), intFmt(t.input_tokens));
    setKpi('kpi-output-tokens', String(t.output_tokens), intFmt(t.output_tokens));
    $('kpi-reasoning-sub').textContent = intFmt(t.reasoning_tokens) + ' reasoning';
    setKpi('kpi-cached-tokens', String(t.cache_read_tokens), intFmt(t.cache_read_tokens));
    $('kpi-cache-write-sub').textContent = intFmt(t.cache_write_tokens) + ' written to cache';
    var priced = t.requests - t.unpriced_requests;
    var avg = priced > 0 && t.spend.length <= 1 ? Number(t.cost) / priced : 0;
    if (t.spend.length > 1) setKpi('kpi-avg-cost', '', '—');
    else setKpi('kpi-avg-cost', String(avg), moneyFmt(avg));
    $('kpi-avg-sub').textContent = (cur ? cur + ' ' : '') + 'per priced request';
    setKpi('kpi-unpriced', String(t.unpriced_requests), intFmt(t.unpriced_requests) + ' req');
    $('kpi-unpriced-sub').textContent = intFmt(t.unpriced_input_tokens) + ' in / ' +
      intFmt(t.unpriced_output_tokens) + ' out tokens, not in spend';
    $('kpi-unpriced-card').classList.toggle('warn', t.unpriced_requests > 0);
    var rate = t.requests > 0 ? t.error_requests / t.requests : 0;
    setKpi('kpi-error-rate', String(rate), (100 * rate).toFixed(1) + ' %');
    $('kpi-errors-sub').textContent = intFmt(t.error_requests) + ' HTTP ≥ 400';
  }

  // ---------- tables (data kept for CSV export) ----------
  function renderTable(id, columns, rows, onPick) {
    state.tables[id] = { columns: columns, rows: rows };
    var table = $(id);
    var head = table.tHead, body = table.tBodies[0];
    head.textContent = ''; body.textContent = '';
    var shown = columns.filter(function (c) { return !c.csvOnly; });
    var hr = el('tr');
    shown.forEach(function (c) { hr.appendChild(el('th', c.num ? { class: 'n' } : null, c.label)); });
    head.appendChild(hr);
    if (!rows.length) {
      var tr = el('tr'); var td = el('td', { colspan: String(shown.length), class: 'muted' }, 'No data');
      tr.appendChild(td); body.appendChild(tr);
      return;
    }
    rows.forEach(function (r) {
      var tr = el('tr');
      if (onPick) { tr.className = 'pick'; tr.addEventListener('click', function () { onPick(r); }); }
      shown.forEach(function (c) {
        var td = el('td', c.num ? { class: 'n' } : null);
        if (c.render) c.render(td, r); else td.textContent = c.show ? c.show(r) : r[c.key];
        if (c.title) td.title = c.title(r);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }
  function csvCell(v) {
    var s = v === null || v === undefined ? '' : String(v);
    var risky = /^[=+\-@]/.test(s) && isNaN(Number(s));
    if (risky || /[",\r\n]/.test(s)) return '"' + (risky ? "'" : '') + s.replace(/"/g, '""') + '"';
    return s;
  }
  function tableCsv(id) {
    var t = state.tables[id];
    if (!t) return '';
    var cols = t.columns.filter(function (c) { return !c.displayOnly; });
    var lines = [cols.map(function (c) { return csvCell(c.csv || c.key); }).join(',')];
    t.rows.forEach(function (r) {
      lines.push(cols.map(function (c) { return csvCell(r[c.key]); }).join(','));
    });
    return lines.join('\n') + '\n';
  }
  function exportCsv(id) {
    var csv = tableCsv(id);
    var name = id.replace(/^table-/, '') + '.csv';
    state.lastExport = { table: id, filename: name, csv: csv };
    document.body.dataset.lastExport = id;
    var url = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
    var a = el('a', { href: url, download: name });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
    return csv;
  }

  // Share of the group's spend in the total of its own currency.
  function groupRows(groups, byCurrency) {
    return groups.map(function (g) {
      return {
        key: g.key,
        requests: g.requests,
        input_tokens: g.input_tokens,
        output_tokens: g.output_tokens,
        cost: g.cost,
        currency: g.currency || '',
        share_pct: pct(g.cost, byCurrency[g.currency] || '0'),
        // Several currencies on the page: every amount says which.
        multi: Object.keys(byCurrency).length > 1,
      };
    });
  }
  function groupColumns(label, keyShow) {
    return [
      { key: 'key', label: label, csv: label.toLowerCase().replace(/ /g, '_'), show: keyShow, title: function (r) { return r.key; } },
      { key: 'requests', label: 'Requests', num: true, show: function (r) { return intFmt(r.requests); } },
      { key: 'tokens', label: 'Tokens in / out', num: true, displayOnly: true,
        show: function (r) { return compact(r.input_tokens) + ' / ' + compact(r.output_tokens); },
        title: function (r) { return intFmt(r.input_tokens) + ' in, ' + intFmt(r.output_tokens) + ' out'; } },
      { key: 'input_tokens', label: 'Input tokens', csvOnly: true },
      { key: 'output_tokens', label: 'Output tokens', csvOnly: true },
      { key: 'cost', label: 'Spend', num: true, show: function (r) { return moneyFmt(r.cost, r.multi ? r.currency : ''); }, title: function (r) { return r.cost + ' ' + r.currency; } },
      { key: 'currency', label: 'Currency', csvOnly: true },
      { key: 'share_pct', label: 'Share', num: true, render: function (td, r) {
        var bar = el('span', { class: 'share' }); bar.style.width = Math.max(1, Math.round(Number(r.share_pct) * 0.5)) + 'px';
        td.appendChild(bar); td.appendChild(document.createTextNode(r.share_pct + ' %'));
      } },
    ];
  }
  function pick(filter) {
    return function (r) { if (r.key) { state.filters[filter] = r.key; syncControls(); writeUrl(true); refresh(); } };
  }

  function renderBudgets(list) {
    var rows = list.map(function (b) {
      return {
        id: b.id, tenant_id: b.tenant_id, api_key_id: b.api_key_id || '', model: b.model || '',
        period: b.period, hard: b.hard, limit: b.limit, spent: b.spent, remaining: b.remaining,
        percent_used: b.percent_used, resets_at: b.resets_at || '', projected: b.projected || '',
        projected_to_exceed: !!b.projected_to_exceed, exceeded: !!b.exceeded, currency: b.currency,
      };
    });
    renderTable('table-budgets', [
      { key: 'tenant_id', label: 'Tenant' },
      { key: 'api_key_id', label: 'Scope', csv: 'api_key_id', show: function (r) {
        return [r.api_key_id ? 'key ' + shortKey(r.api_key_id) : '', r.model ? 'model ' + r.model : ''].filter(Boolean).join(', ') || 'all usage';
      } },
      { key: 'model', label: 'Model', show: function (r) { return r.model || '—'; } },
      { key: 'period', label: 'Period', show: function (r) { return r.period + (r.hard ? ' (hard)' : ' (soft)'); } },
      { key: 'spent', label: 'Spent', num: true, show: function (r) { return moneyFmt(r.spent, r.currency); } },
      { key: 'limit', label: 'Limit', num: true, show: function (r) { return moneyFmt(r.limit, r.currency); } },
      { key: 'currency', label: 'Currency', csvOnly: true },
      { key: 'percent_used', label: 'Used', render: function (td, r) {
        var p = Number(r.percent_used);
        var bar = el('span', { class: 'bar' + (r.exceeded ? ' over' : p >= 80 ? ' hot' : '') });
        var fill = el('span'); fill.style.width = Math.min(100, p) + '%'; bar.appendChild(fill);
        td.appendChild(bar); td.appendChild(document.createTextNode(' ' + r.percent_used + ' %'));
      } },
      { key: 'resets_at', label: 'Resets', show: function (r) { return r.resets_at ? r.resets_at.replace('T', ' ').replace(/:00(\.\d+)?Z$/, ' UTC') : 'never'; } },
      { key: 'projected', label: 'Projected', num: true, render: function (td, r) {
        td.textContent = r.projected ? moneyFmt(r.projected, r.currency) : '—';
        if (r.projected_to_exceed) { td.appendChild(document.createTextNode(' ')); td.appendChild(el('span', { class: 'tag bad' }, 'over limit')); }
      } },
    ], rows);
  }

  function renderTransactions(list) {
    var rows = list.map(function (t) {
      return {
        occurred_at: t.occurred_at, request_id: t.request_id, tenant_id: t.tenant_id,
        api_key_id: t.api_key_id || '', provider: t.provider, model: t.model || '',
        http_status: t.http_status, status: t.status, input_tokens: t.input_tokens,
        output_tokens: t.output_tokens, cost: t.cost || '', currency: t.currency || '',
      };
    });
    renderTable('table-transactions', [
      { key: 'occurred_at', label: 'Time (UTC)', show: function (r) { return r.occurred_at.replace('T', ' ').replace(/(\.\d+)?Z$/, ''); } },
      { key: 'tenant_id', label: 'Tenant' },
      { key: 'api_key_id', label: 'Key', show: function (r) { return shortKey(r.api_key_id); }, title: function (r) { return r.api_key_id; } },
      { key: 'model', label: 'Model' },
      { key: 'http_status', label: 'HTTP', num: true },
      { key: 'input_tokens', label: 'In', num: true, show: function (r) { return intFmt(r.input_tokens); } },
      { key: 'output_tokens', label: 'Out', num: true, show: function (r) { return intFmt(r.output_tokens); } },
      { key: 'cost', label: 'Cost', num: true, show: function (r) { return r.status === 'priced' ? moneyFmt(r.cost, r.currency) : 'unpriced'; } },
      { key: 'currency', label: 'Currency', csvOnly: true },
      { key: 'status', label: 'Status', csvOnly: true },
      { key: 'request_id', label: 'Request', csvOnly: true },
      { key: 'provider', label: 'Provider', csvOnly: true },
    ], rows);
  }

  // ---------- filter controls ----------
  function fillSelect(id, groups, selected, show) {
    var s = $(id);
    var keys = groups.map(function (g) { return g.key; }).filter(function (k) { return k !== ''; });
    if (selected && keys.indexOf(selected) < 0) keys.unshift(selected);
    s.textContent = '';
    s.appendChild(el('option', { value: '' }, 'All'));
    keys.forEach(function (k) {
      var o = el('option', { value: k }, show ? show(k) : k);
      o.title = k;
      s.appendChild(o);
    });
    s.value = selected || '';
  }
  function syncControls() {
    var f = state.filters;
    $('f-range').value = f.range;
    $('f-start').value = f.start;
    $('f-end').value = f.end;
    $('filters').classList.toggle('preset', f.range !== 'custom');
    ['tenant', 'key', 'model', 'provider'].forEach(function (k) {
      var s = $('f-' + k);
      if (f[k] && !Array.prototype.some.call(s.options, function (o) { return o.value === f[k]; })) {
        s.appendChild(el('option', { value: f[k] }, f[k]));
      }
      s.value = f[k] || '';
    });
    Array.prototype.forEach.call(document.querySelectorAll('#metric-toggle button'), function (b) {
      b.setAttribute('aria-pressed', String(b.dataset.metric === f.metric));
    });
  }

  // ---------- chart ----------
  function bucketTimes(w, bucket) {
    var step = bucket === 'hour' ? 3600000 : 86400000;
    var s = Date.parse(w.start), e = Date.parse(w.end);
    var t = Math.floor(s / step) * step;
    var out = [];
    for (; t < e && out.length < 2000; t += step) out.push(t);
    return out;
  }
  function keyTime(key) { return Date.parse(key.length === 10 ? key + 'T00:00:00Z' : key); }
  function metricOf(g, metric) {
    if (metric === 'requests') return g.requests;
    if (metric === 'tokens') return g.input_tokens + g.output_tokens;
    return Number(g.cost);
  }
  function drawChart() {
    var s = state.series;
    var box = $('chart');
    if (state.chart) { state.chart.destroy(); state.chart = null; }
    box.textContent = '';
    if (!s || !s.names.length || typeof uPlot === 'undefined') { $('chart-empty').hidden = !!(s && s.names.length); return; }
    var metric = state.filters.metric;
    var own = s.perSeries.map(function (rows) {
      return s.times.map(function (t) { var g = rows[t]; return g ? metricOf(g, metric) : 0; });
    });
    // Stack: cumulative sums, drawn largest first so each band shows.
    var cum = [];
    own.forEach(function (vals, i) {
      cum.push(vals.map(function (v, j) { return v + (i ? cum[i - 1][j] : 0); }));
    });
    var order = cum.map(function (_, i) { return i; }).reverse();
    var data = [s.times.map(function (t) { return t / 1000; })].concat(order.map(function (i) { return cum[i]; }));
    var fmt = metric === 'cost' ? function (v) { return v == null ? '' : moneyFmt(v, s.currency); } : function (v) { return v == null ? '' : compact(v); };
    var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 60] }) : undefined;
    var series = [{ label: 'time' }].concat(order.map(function (i) {
      var c = COLORS[i % COLORS.length];
      return {
        label: s.names[i], stroke: c, fill: c + 'cc', width: 1, paths: bars,
        value: function (u, v, si, di) { return di == null ? '' : fmt(own[i][di]); },
      };
    }));
    var opts = {
      width: Math.max(300, box.clientWidth - 4), height: 300,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'); },
      scales: { x: { time: true, range: function (u, min, max) { return [min - s.step / 2000, max + s.step / 2000]; } }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.08 : 1]; } } },
      series: series,
      axes: [{}, { size: 70, values: function (u, vals) { return vals.map(function (v) { return metric === 'cost' ? moneyFmt(v) : compact(v); }); } }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    state.chart = new uPlot(opts, data, box);
    box.dataset.series = s.names.join('|');
    box.dataset.metric = metric;
  }

  // ---------- month forecast and cache savings (/v1/forecast) ----------
  // The tenant filter only: the forecast is a tenant's (or, for the admin
  // without a tenant, everyone's) month, whatever the other filters.
  function forecastJob() {
    var p = {};
    if (state.filters.tenant) p.tenant_id = state.filters.tenant;
    return api('/v1/forecast', p).then(function (f) {
      var end = new Date();
      end.setUTCSeconds(0, 0);
      var q = Object.assign({ start: f.period_start, end: iso(new Date(end.getTime() + 60000)), group_by: 'day', status: 'priced' }, p);
      return api('/v1/summary', q).then(function (b) { return { forecast: f, days: b.groups }; });
    }).catch(function (e) { return e.status === 404 || e.status === 405 ? null : { error: e }; });
  }
  function renderSavings(f) {
    var card = $('kpi-savings-card');
    if (!f) { card.hidden = true; return; }
    card.hidden = false;
    var list = f.cache_savings || [];
    if (!list.length) { setKpi('kpi-cache-savings', '0', moneyFmt('0')); $('kpi-cache-savings').classList.remove('multi'); return; }
    setKpi('kpi-cache-savings', list.map(function (c) { return c.savings + ' ' + c.currency; }).join(' + '),
      list.map(function (c) { return moneyFmt(c.savings, c.currency); }).join(' · '));
    $('kpi-cache-savings').classList.add('multi');
    $('kpi-cache-savings').dataset.tokens = list.map(function (c) { return c.cache_read_tokens + ' ' + c.currency; }).join(' + ');
  }
  function renderForecast(fc) {
    var panel = $('forecast-panel'), box = $('forecast-charts');
    state.forecastCharts.forEach(function (c) { c.destroy(); });
    state.forecastCharts = [];
    state.forecastSeries = null;
    box.textContent = '';
    var f = fc && !fc.error ? fc.forecast : null;
    renderSavings(f);
    if (!f) { panel.hidden = true; return; }
    panel.hidden = false;
    $('forecast-sub').textContent = (f.tenant_id || 'all tenants') + ', ' + f.period_start.slice(0, 10) + ' to ' + f.period_end.slice(0, 10) + ' (' + f.time_zone + ')';
    var t0 = Date.parse(f.period_start), t1 = Date.parse(f.period_end), tn = Date.parse(f.now);
    var DAY = 86400000;
    var bases = [];
    if (!f.forecasts.length) box.appendChild(el('p', { class: 'muted' }, 'No priced spend this month or in the last four weeks.'));
    f.forecasts.forEach(function (c) {
      var wrap = el('div', { class: 'forecast', 'data-currency': c.currency, 'data-spent': c.spent, 'data-projected': c.projected,
        'data-low': c.low, 'data-high': c.high, 'data-method': c.basis.method, 'data-history-days': String(c.basis.history_days) });
      wrap.appendChild(el('div', { class: 'forecast-head' }, c.currency + ': spent ' + moneyFmt(c.spent, c.currency) +
        ', projected ' + moneyFmt(c.projected, c.currency) + ' (range ' + moneyFmt(c.low) + ' to ' + moneyFmt(c.high) + ')'));
      var chartBox = el('div', { class: 'forecast-chart' });
      wrap.appendChild(chartBox);
      box.appendChild(wrap);
      bases.push(c.currency + ': ' + c.basis.method + ', ' + c.basis.history_days + ' days of history' +
        (c.basis.method === 'weekday_seasonal_trend' ? ', level ' + moneyFmt(c.basis.level_per_day) + '/day, trend ' + moneyFmt(c.basis.trend_per_day) + '/day' : ''));
      if (typeof uPlot === 'undefined') return;
      // Spent so far: cumulative by UTC day, ending at now on the forecast's figure.
      var day = {};
      fc.days.forEach(function (g) { if (g.currency === c.currency) day[keyTime(g.key)] = Number(g.cost); });
      var xs = [t0];
      for (var t = Math.floor(t0 / DAY) * DAY + DAY; t < t1; t += DAY) xs.push(t);
      xs.push(tn); xs.push(t1);
      xs = xs.filter(function (x, i, a) { return x >= t0 && x <= t1 && a.indexOf(x) === i; }).sort(function (a, b) { return a - b; });
      var spent = Number(c.spent), span = Math.max(1, t1 - tn);
      var line = function (end) { return function (x) { return x < tn ? null : spent + (Number(end) - spent) * (x - tn) / span; }; };
      var actual = xs.map(function (x) {
        if (x > tn) return null;
        if (x === tn) return spent;
        var sum = 0;
        Object.keys(day).forEach(function (k) { if (Number(k) + DAY <= x) sum += day[k]; });
        return sum;
      });
      var data = [xs.map(function (x) { return x / 1000; }), actual, xs.map(line(c.projected)), xs.map(line(c.low)), xs.map(line(c.high))];
      var series = [{ label: 'time' },
        { label: 'spent', stroke: '#0969da', width: 2 },
        { label: 'forecast', stroke: '#e16f24', width: 2, dash: [8, 5] },
        { label: 'low', stroke: '#e16f24', width: 1, dash: [2, 4] },
        { label: 'high', stroke: '#e16f24', width: 1, dash: [2, 4] }];
      series.slice(1).forEach(function (sr) { sr.value = function (u, v) { return v == null ? '' : moneyFmt(v, c.currency); }; });
      var chart = new uPlot({
        width: Math.max(300, box.clientWidth - 4), height: 220,
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'); },
        scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.08 : 1]; } } },
        series: series,
        axes: [{}, { size: 70, values: function (u, vals) { return vals.map(function (v) { return moneyFmt(v); }); } }],
        cursor: { drag: { x: false, y: false } },
      }, data, chartBox);
      state.forecastCharts.push(chart);
      if (!state.forecastSeries) {
        state.forecastSeries = series.slice(1).map(function (sr, i) {
          var vals = data[i + 1];
          return { label: sr.label, dash: sr.dash || null, first: vals.find(function (v) { return v != null; }), last: vals[vals.length - 1] };
        });
      }
    });
    $('forecast-basis').textContent = bases.join(' · ');
  }

  // ---------- refresh ----------
  function showError(msg) {
    var e = $('error');
    e.textContent = msg || '';
    e.hidden = !msg;
  }
  function refresh() {
    var w = timeWindow();
    if (w.error) { showError(w.error); document.body.dataset.state = 'error'; return Promise.resolve(); }
    showError('');
    document.body.dataset.state = 'loading';
    var gen = ++state.inflight;
    var bucket = w.ms <= 3 * 86400000 ? 'hour' : 'day';
    var jobs = [
      summary(w, 'total'),
      summary(w, bucket),
      summary(w, 'model'),
      summary(w, 'api_key'),
      summary(w, 'tenant'),
      summary(w, 'model', 'model'),
      summary(w, 'api_key', 'key'),
      summary(w, 'tenant', 'tenant'),
      summary(w, 'provider', 'provider'),
      api('/v1/transactions', Object.assign(filterParams(), { start: w.start, end: w.end, limit: '25' })),
      api('/v1/budgets', state.filters.tenant ? { tenant_id: state.filters.tenant } : {})
        .catch(function (e) { return e.status === 404 || e.status === 405 ? null : { error: e }; }),
      forecastJob(),
    ];
    return Promise.all(jobs).then(function (r) {
      var total = r[0], models = r[2];
      // Per-model series for the stacked chart: the top models, the rest as "other".
      var top = models.slice(0, TOP_SERIES).map(function (g) { return g.key; });
      var per = top.map(function (m) { return summary(w, bucket, 'model', { model: m || '' }).then(function (rows) { return rows; }); });
      return Promise.all(per).then(function (perRows) {
        if (gen !== state.inflight) return; // a newer refresh superseded this one
        var byCurrency = combineTotals(total).byCurrency;
        renderKpis(total);
        var times = bucketTimes(w, bucket);
        var index = function (rows) { var o = {}; rows.forEach(function (g) { o[keyTime(g.key)] = g; }); return o; };
        var perSeries = perRows.map(index);
        var names = top.map(function (m) { return m || '(no model)'; });
        if (models.length > TOP_SERIES) {
          var all = index(r[1]);
          var other = {};
          times.forEach(function (t) {
            var a = all[t]; if (!a) return;
            var o = { requests: a.requests, input_tokens: a.input_tokens, output_tokens: a.output_tokens, cost: Number(a.cost) };
            perSeries.forEach(function (ps) { var g = ps[t]; if (g) { o.requests -= g.requests; o.input_tokens -= g.input_tokens; o.output_tokens -= g.output_tokens; o.cost -= Number(g.cost); } });
            other[t] = o;
          });
          perSeries.push(other); names.push('other');
        }
        state.series = { step: bucket === 'hour' ? 3600000 : 86400000, times: times, names: names, perSeries: perSeries, currency: combineTotals(total).currency || '' };
        $('chart-bucket').textContent = 'per ' + bucket + ' (UTC), stacked by model';
        drawChart();
        renderTable('table-models', groupColumns('Model'), groupRows(models, byCurrency), pick('model'));
        renderTable('table-keys', groupColumns('API key', function (r) { return shortKey(r.key); }), groupRows(r[3], byCurrency), pick('key'));
        renderTable('table-tenants', groupColumns('Tenant'), groupRows(r[4], byCurrency), pick('tenant'));
        fillSelect('f-model', r[5], state.filters.model);
        fillSelect('f-key', r[6], state.filters.key, shortKey);
        fillSelect('f-tenant', r[7], state.filters.tenant);
        fillSelect('f-provider', r[8], state.filters.provider);
        renderTransactions(r[9].transactions || []);
        var budgets = r[10];
        $('budgets-panel').hidden = !(budgets && budgets.budgets);
        if (budgets && budgets.budgets) renderBudgets(budgets.budgets);
        renderForecast(r[11]);
        $('window').textContent = 'From ' + w.start + ' to ' + w.end + ' (UTC, end exclusive)';
        $('window').dataset.start = w.start;
        $('window').dataset.end = w.end;
        $('last-updated').textContent = 'updated ' + new Date().toISOString().slice(11, 19) + ' UTC';
        state.generation += 1;
        document.body.dataset.generation = String(state.generation);
        document.body.dataset.state = 'ready';
      });
    }).catch(function (e) {
      if (gen !== state.inflight) return;
      if (e && e.status === 401) { signOut('That token was not accepted.'); return; }
      showError('Could not load: ' + (e && e.message ? e.message : e));
      document.body.dataset.state = 'error';
    });
  }

  // Live refresh period: `refresh` in the URL (seconds, 1 to 3600), else 30 s.
  function refreshMs() {
    var s = parseInt(state.filters.refresh, 10);
    return s >= 1 && s <= 3600 ? s * 1000 : REFRESH_MS;
  }
  function schedule() {
    if (state.timer) clearInterval(state.timer);
    state.timer = $('live').checked ? setInterval(refresh, refreshMs()) : null;
    $('live-label').textContent = 'live (' + refreshMs() / 1000 + ' s)';
  }

  // ---------- sign in / out ----------
  function signIn(token) {
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('login').hidden = true;
    $('main').hidden = false;
    $('status-bar').hidden = false;
    syncControls();
    schedule();
    return refresh();
  }
  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
    $('main').hidden = true;
    $('status-bar').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    document.body.dataset.state = 'login';
    $('token-input').focus();
  }

  function onFilterChange(key, value) {
    state.filters[key] = value;
    if (key === 'range' && value === 'custom' && !(state.filters.start && state.filters.end)) {
      // Start the custom range from the last 30 days, to be edited.
      var now = new Date();
      now.setUTCSeconds(0, 0);
      state.filters.end = iso(new Date(now.getTime() + 60000));
      state.filters.start = iso(new Date(now.getTime() + 60000 - 30 * 86400000));
    }
    syncControls();
    writeUrl(true);
    if (key === 'metric') { drawChart(); return; }
    refresh();
  }

  function init() {
    state.filters = readUrl();
    $('login-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = $('token-input').value.trim();
      if (t) { $('token-input').value = ''; signIn(t); }
    });
    $('signout').addEventListener('click', function () { signOut(''); });
    $('refresh').addEventListener('click', function () { refresh(); });
    $('live').addEventListener('change', schedule);
    $('f-range').addEventListener('change', function (e) { onFilterChange('range', e.target.value); });
    ['start', 'end'].forEach(function (k) {
      $('f-' + k).addEventListener('change', function (e) { onFilterChange(k, e.target.value.trim()); });
    });
    ['tenant', 'key', 'model', 'provider'].forEach(function (k) {
      $('f-' + k).addEventListener('change', function (e) { onFilterChange(k, e.target.value); });
    });
    $('f-clear').addEventListener('click', function () {
      ['tenant', 'key', 'model', 'provider'].forEach(function (k) { state.filters[k] = ''; });
      syncControls(); writeUrl(true); refresh();
    });
    Array.prototype.forEach.call(document.querySelectorAll('#metric-toggle button'), function (b) {
      b.addEventListener('click', function () { onFilterChange('metric', b.dataset.metric); });
    });
    Array.prototype.forEach.call(document.querySelectorAll('button.csv'), function (b) {
      b.addEventListener('click', function () { exportCsv(b.dataset.table); });
    });
    window.addEventListener('popstate', function () { state.filters = readUrl(); syncControls(); refresh(); });
    var resizeTimer = null;
    window.addEventListener('resize', function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(drawChart, 150);
    });
    var saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved); else signOut('');
  }

  // For tests and power users: the CSV of any table, the last export.
  window.dashboard = {
    tableCsv: tableCsv,
    exportCsv: exportCsv,
    refresh: refresh,
    get lastExport() { return state.lastExport; },
    get forecastSeries() { return state.forecastSeries; },
    get filters() { return Object.assign({}, state.filters); },
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
