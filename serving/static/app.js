// partnerscore portfolio page: sortable, filterable table. No dependencies, no network.
(function () {
  "use strict";
  var table = document.getElementById("portfolio");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var filter = document.getElementById("filter");
  var tierSel = document.getElementById("tier-filter");
  var quadSel = document.getElementById("quadrant-filter");
  var count = document.getElementById("shown-count");

  function cellValue(row, idx, numeric) {
    var cell = row.cells[idx];
    var raw = cell.getAttribute("data-value");
    var text = raw !== null ? raw : cell.textContent;
    if (numeric) { var v = parseFloat(text); return isNaN(v) ? -Infinity : v; }
    return text.toLowerCase();
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, idx) {
    if (!th.classList.contains("sortable")) { return; }
    th.addEventListener("click", function () {
      var numeric = th.getAttribute("data-type") === "num";
      var asc = !th.classList.contains("sorted-asc");
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (other) {
        other.classList.remove("sorted-asc", "sorted-desc");
      });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      rows.sort(function (a, b) {
        var x = cellValue(a, idx, numeric), y = cellValue(b, idx, numeric);
        if (x < y) { return asc ? -1 : 1; }
        if (x > y) { return asc ? 1 : -1; }
        return 0;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });

  function applyFilter() {
    var q = (filter.value || "").toLowerCase();
    var tier = tierSel ? tierSel.value : "";
    var quad = quadSel ? quadSel.value : "";
    var shown = 0;
    rows.forEach(function (r) {
      var ok = (!q || r.getAttribute("data-search").indexOf(q) !== -1) &&
               (!tier || r.getAttribute("data-tier") === tier) &&
               (!quad || r.getAttribute("data-quadrant") === quad);
      r.style.display = ok ? "" : "none";
      if (ok) { shown += 1; }
    });
    if (count) { count.textContent = String(shown); }
  }
  [filter, tierSel, quadSel].forEach(function (el) {
    if (el) { el.addEventListener("input", applyFilter); el.addEventListener("change", applyFilter); }
  });
  applyFilter();
}());
