/* Charts with the vendored uPlot (static/dashboard/vendor): site power and a session's curve. */
(function () {
  "use strict";
  if (!window.uPlot) { return; }
  function width(el) { return Math.max(280, el.clientWidth - 4); }
  function draw(el, series, data, axes) {
    el.innerHTML = "";
    if (!data[0].length) { el.innerHTML = '<p class="muted">No data for this period yet.</p>'; return null; }
    var plot = new uPlot({ width: width(el), height: 240, series: series, scales: { x: { time: true } },
      axes: [{ space: 90 }].concat(axes) }, data, el);
    window.addEventListener("resize", function () { plot.setSize({ width: width(el), height: 240 }); });
    return plot;
  }
  function load(el, build) {
    fetch(el.dataset.url + (el.dataset.query || ""), { credentials: "same-origin" })
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
        draw(site, [{}, { label: "EV kW", stroke: "#2b7de9", width: 2 }, { label: "Site meter kW", stroke: "#66727f" },
          { label: "PV kW", stroke: "#e0a800" }], [d.t, d.ev_kw, d.site_kw, d.pv_kw], [{ label: "kW" }]);
      });
    };
    var select = document.getElementById("chart-hours");
    if (select) { select.addEventListener("change", refresh); }
    refresh();
  }
  var session = document.getElementById("session-chart");
  if (session) {
    load(session, function (d) {
      draw(session, [{}, { label: "kW", stroke: "#2b7de9", width: 2, scale: "kW" }, { label: "L1 A", stroke: "#c0392b", scale: "A" },
        { label: "L2 A", stroke: "#1f8a4c", scale: "A" }, { label: "L3 A", stroke: "#7c3aed", scale: "A" },
        { label: "offered A", stroke: "#b45309", dash: [4, 4], scale: "A" }],
        [d.t, d.power_kw, d.L1, d.L2, d.L3, d.offered_a],
        [{ scale: "kW", label: "kW" }, { scale: "A", label: "A", side: 1, grid: { show: false } }]);
    });
  }
}());
