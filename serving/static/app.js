// partnerscore portfolio page: a paged table over the embedded JSON (script#portfolio-data,
// format "partnerscore-portfolio/1", documented in the README). Sorting, filtering and paging
// happen here; only one page of rows is in the DOM. No dependencies, no network: the data is
// part of the page, so it works when opened from disk (file://).
(function () {
  "use strict";
  var table = document.getElementById("portfolio");
  var source = document.getElementById("portfolio-data");
  if (!table || !source) { return; }
  var data = JSON.parse(source.textContent);
  var col = data.columns;
  var cat = data.categories;
  var n = data.rows;
  var pageSize = data.page_size || 100;
  var body = table.tBodies[0];
  var filter = document.getElementById("filter");
  var tierSel = document.getElementById("tier-filter");
  var quadSel = document.getElementById("quadrant-filter");
  var count = document.getElementById("shown-count");
  var info = document.getElementById("page-info");
  var buttons = {
    first: document.getElementById("page-first"),
    prev: document.getElementById("page-prev"),
    next: document.getElementById("page-next"),
    last: document.getElementById("page-last")
  };

  function label(name, i) { var v = cat[name][col[name][i]]; return v === undefined ? "" : v; }
  function group(v) { return v.replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function fixed(v, digits) {
    if (v === null) { return "\u2013"; }
    var s = v.toFixed(digits);
    var neg = s.charAt(0) === "-";
    var parts = (neg ? s.slice(1) : s).split(".");
    return (neg ? "-" : "") + group(parts[0]) + (parts.length > 1 ? "." + parts[1] : "");
  }
  function money(v) {
    if (v === null) { return "\u2013"; }
    if (v === 0) { return "$0"; }
    return (v < 0 ? "-$" : "$") + group(String(Math.abs(v)));
  }
  function slug(id) {  // serving.report.report_filename's slug, character for character
    return id.replace(/[^A-Za-z0-9_-]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 40) || "partner";
  }
  function href(i) { return "partners/" + slug(col.id[i]) + "-" + col.file_hash[i] + ".html"; }
  function segment(i) {
    return [label("tier", i), label("region", i), label("partner_type", i)].join(" \u00b7 ");
  }

  var search = new Array(n);
  for (var i = 0; i < n; i += 1) {
    search[i] = [col.name[i], col.id[i], label("tier", i), label("region", i),
                 label("industry", i), label("partner_type", i)].join(" ").toLowerCase();
  }
  // sort keys per header column (same order as the <th> cells)
  var keys = [
    function (i) { return col.name[i].toLowerCase(); },
    function (i) { return segment(i).toLowerCase(); },
    function (i) { return col.score[i]; },
    function (i) { return label("score_tier", i).toLowerCase(); },
    function (i) { return col.revenue[i]; },
    function (i) { return col.engagement[i]; },
    function (i) { return label("quadrant_label", i).toLowerCase(); },
    function (i) { return col.peer[i]; },
    function (i) { return label("action", i).toLowerCase(); }
  ];

  var order = [];  // row numbers in the current sort order
  for (i = 0; i < n; i += 1) { order.push(i); }
  var shown = order;  // rows passing the filters, in sort order
  var page = 0;

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function badge(td, text, title) {
    var span = document.createElement("span");
    span.className = "badge warn";
    span.title = title;
    span.textContent = text;
    td.appendChild(document.createTextNode(" "));
    td.appendChild(span);
  }

  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    page = Math.min(Math.max(page, 0), pages - 1);
    var start = page * pageSize;
    var end = Math.min(start + pageSize, shown.length);
    var frag = document.createDocumentFragment();
    for (var k = start; k < end; k += 1) {
      var r = shown[k];
      var tr = document.createElement("tr");
      tr.setAttribute("data-row", String(r));
      var td = document.createElement("td");
      var a = document.createElement("a");
      a.href = href(r);
      a.textContent = col.name[r];
      var idDiv = document.createElement("div");
      idDiv.className = "muted";
      idDiv.textContent = col.id[r];
      td.appendChild(a);
      td.appendChild(idDiv);
      tr.appendChild(td);
      cell(tr, segment(r));
      var scoreCell = cell(tr, fixed(col.score[r], 1), "num");
      if (col.flags[r] & 1) { badge(scoreCell, "prov.", "provisional"); }
      if (col.flags[r] & 2) { badge(scoreCell, "swing", "large score swing"); }
      cell(tr, label("score_tier", r));
      cell(tr, money(col.revenue[r]), "num");
      cell(tr, col.engagement[r] === null ? "\u2013" : col.engagement[r] + "%", "num");
      cell(tr, label("quadrant_label", r));
      cell(tr, fixed(col.peer[r], 0), "num");
      cell(tr, label("action", r));
      frag.appendChild(tr);
    }
    body.textContent = "";
    body.appendChild(frag);
    if (count) { count.textContent = String(shown.length); }
    if (info) {
      info.textContent = shown.length
        ? "rows " + (start + 1) + "\u2013" + end + " of " + shown.length + " \u00b7 page " +
          (page + 1) + " of " + pages
        : "no matching partners";
    }
    buttons.first.disabled = buttons.prev.disabled = page === 0;
    buttons.next.disabled = buttons.last.disabled = page >= pages - 1;
  }

  var lastFilter = null;
  function applyFilter(force) {
    var q = (filter.value || "").toLowerCase();
    var tier = tierSel ? tierSel.value : "";
    var quad = quadSel ? quadSel.value : "";
    // "change" also fires when the box loses focus (e.g. on a click on a row's link):
    // rebuilding the rows then would swallow that click
    var key = [q, tier, quad].join("\u0000");
    if (force !== true && key === lastFilter) { return; }
    lastFilter = key;
    shown = order.filter(function (r) {
      return (!q || search[r].indexOf(q) !== -1) &&
             (!tier || label("score_tier", r) === tier) &&
             (!quad || label("quadrant", r) === quad);
    });
    page = 0;
    render();
  }

  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, idx) {
    if (!th.classList.contains("sortable")) { return; }
    // a keyboard reaches and sorts a column as a mouse does; screen readers hear the order
    th.tabIndex = 0;
    th.setAttribute("aria-sort", "none");
    th.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); th.click(); }
    });
    th.addEventListener("click", function () {
      var numeric = th.getAttribute("data-type") === "num";
      var asc = !th.classList.contains("sorted-asc");
      Array.prototype.forEach.call(heads, function (other) {
        other.classList.remove("sorted-asc", "sorted-desc");
        if (other.classList.contains("sortable")) { other.setAttribute("aria-sort", "none"); }
      });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var key = keys[idx];
      var values = new Array(n);
      for (var r = 0; r < n; r += 1) {
        var v = key(r);
        values[r] = numeric && v === null ? -Infinity : v;  // missing numbers sort lowest
      }
      order.sort(function (a, b) {
        var x = values[a], y = values[b];
        if (x < y) { return asc ? -1 : 1; }
        if (x > y) { return asc ? 1 : -1; }
        return a - b;  // ties keep the file's order
      });
      applyFilter(true);
    });
  });
  [filter, tierSel, quadSel].forEach(function (el) {
    if (el) { el.addEventListener("input", applyFilter); el.addEventListener("change", applyFilter); }
  });
  buttons.first.addEventListener("click", function () { page = 0; render(); });
  buttons.prev.addEventListener("click", function () { page -= 1; render(); });
  buttons.next.addEventListener("click", function () { page += 1; render(); });
  buttons.last.addEventListener("click", function () { page = Infinity; render(); });
  applyFilter(true);
}());
