/* Charts with the vendored uPlot (static/dashboard/vendor): site power and a session's curve. */
(function () {
  "use strict";
  if (!window.uPlot) { return; }
  function width(el) { return Math.max(280, el.clientWidth - 4); }
  /* Empty slots either side, so that one day or month is a bar, not a point in a range of years. */
  function padded(t, values, pad) {
    if (!t.length) { return [t, values]; }
    return [[t[0] - pad].concat(t, [t[t.length - 1] + pad]), [null].concat(values, [null])];
  }
  function fromZero(u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; }
  function draw(el, series, data, axes, scales) {
    el.innerHTML = "";
    if (!data[0].length) { el.innerHTML = '<p class="muted">No data for this period yet.</p>'; return null; }
    var plot = new uPlot({ width: width(el), height: 240, series: series,
      scales: Object.assign({ x: { time: true }, y: { range: fromZero } }, scales || {}),
      axes: [{ space: 90 }].concat(axes) }, data, el);
    window.addEventListener("resize", function () { plot.setSize({ width: width(el), height: 240 }); });
    return plot;
  }
  function load(el, build) {
    return fetch(el.dataset.url + (el.dataset.query || ""), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status + " " + r.statusText); } return r.json(); })
      .then(build)
      .catch(function (error) { el.innerHTML = '<p class="warn">Chart unavailable: ' + error.message + "</p>"; });
  }
  var site = document.getElementById("site-chart");
  if (site) {
    var refresh = function () {
      var hours = document.getElementById("chart-hours");
      site.dataset.query = "?hours=" + (hours ? hours.value : "6");
      load(site, function (d) {
        draw(site, [{}, { label: "EV kW", stroke: "#2b7de9", width: 2, spanGaps: true },
          { label: "Site meter kW", stroke: "#66727f", spanGaps: true }, { label: "PV kW", stroke: "#e0a800", spanGaps: true }, { label: "limit kW", stroke: "#c0392b", dash: [6, 4], points: { show: false } }],
          [d.t, d.ev_kw, d.site_kw, d.pv_kw, d.limit_kw], [{ label: "kW" }]);
      });
    };
    var select = document.getElementById("chart-hours");
    if (select) { select.addEventListener("change", refresh); }
    refresh();
  }
  var energy = document.getElementById("energy-chart");
  if (energy) {
    var drawEnergy = function () {
      var kind = document.getElementById("energy-kind");
      energy.dataset.query = location.search ? location.search + "&kind=" + kind.value : "?kind=" + kind.value;
      load(energy, function (d) {
        var bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined;
        draw(energy, [{}, { label: "kWh", stroke: "#2b7de9", fill: "rgba(43,125,233,.35)", paths: bars, points: { show: false } }],
          padded(d.t, d.energy_kwh, kind.value === "month" ? 20 * 86400 : 86400), [{ label: "kWh" }]);
      });
    };
    document.getElementById("energy-kind").addEventListener("change", drawEnergy);
    drawEnergy();
  }
  var session = document.getElementById("session-chart");
  if (session) {
    var sessionPlot = null, reading = false, again = false;
    var drawSession = function () {
      if (reading) { again = true; return; }  // one read at a time; a newer point read once it returns
      reading = true;
      load(session, function (d) {
        var data = [d.t, d.power_kw, d.L1, d.L2, d.L3, d.offered_a];
        if (sessionPlot && d.t.length) { sessionPlot.setData(data); }
        else {
          sessionPlot = draw(session, [{}, { label: "kW", stroke: "#2b7de9", width: 2, scale: "kW" }, { label: "L1 A", stroke: "#c0392b", scale: "A" },
            { label: "L2 A", stroke: "#1f8a4c", scale: "A" }, { label: "L3 A", stroke: "#7c3aed", scale: "A" },
            { label: "offered A", stroke: "#b45309", dash: [4, 4], scale: "A" }],
            data,
            [{ scale: "kW", label: "kW" }, { scale: "A", label: "A", side: 1, grid: { show: false } }],
            { kW: { range: fromZero }, A: { range: fromZero } });
        }
        session.dataset.points = String(d.t.length);
      }).then(function () { reading = false; if (again) { again = false; drawSession(); } });
    };
    drawSession();
    // A running session's page is live: the websocket says when a new meter value arrived.
    document.addEventListener("evce:update", function (event) {
      if (event.detail && event.detail.curve !== undefined) { drawSession(); }
    });
  }
}());
