"""The HTML report's inline style sheet and script (no CDN, no external file).

The script renders neuron cards from the page's JSON payload a page at a time, as the
reader scrolls, so a layer of thousands of neurons opens fast; it sets every text from
the payload with ``textContent`` (never ``innerHTML``), so concept strings stay text.
"""

from __future__ import annotations

#: Sent with the page: nothing may be fetched (images are data URIs, script and style inline).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
)

CSS = """
:root { --bg: #f6f7f9; --fg: #1d232b; --muted: #5d6875; --card: #fff; --line: #dde2e8;
  --accent: #2f6fb3; --bar: #7aa6d6; --dead: #b0b7c0; --flash: #fff3bf; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #15191e; --fg: #e3e7ec; --muted: #9aa5b1; --card: #1e242b; --line: #323b45;
    --accent: #7fb0e8; --bar: #3d6da3; --dead: #59626c; --flash: #4a4122; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { padding: 14px 20px 0; background: var(--card); border-bottom: 1px solid var(--line);
  position: sticky; top: 0; z-index: 5; }
h1 { font-size: 19px; margin: 0 0 2px; }
h2 { font-size: 16px; margin: 18px 0 8px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
.meta { color: var(--muted); margin: 0 0 8px; overflow-wrap: anywhere; }
nav { display: flex; gap: 2px; flex-wrap: wrap; }
nav a { padding: 6px 12px; border: 1px solid transparent; border-bottom: none;
  border-radius: 6px 6px 0 0; color: var(--fg); text-decoration: none; }
nav a.active { background: var(--bg); border-color: var(--line); font-weight: 600; }
nav a .n { color: var(--muted); font-size: 12px; margin-left: 4px; }
main { padding: 8px 20px 40px; }
main > section { scroll-margin-top: var(--header, 90px); }
.panel { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; margin: 10px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 6px 28px; margin: 4px 0; }
.figures div { min-width: 90px; }
.figures b { display: block; font-size: 18px; }
.figures span { color: var(--muted); font-size: 12px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 8px; align-items: flex-start; }
.plots img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
.chips { display: flex; flex-wrap: wrap; gap: 4px; margin: 6px 0; }
.chip { border: 1px solid var(--line); border-radius: 12px; padding: 1px 9px; background: var(--bg);
  color: var(--fg); cursor: pointer; font: inherit; font-size: 12px; }
.chip .k { color: var(--muted); margin-left: 3px; }
table { border-collapse: collapse; margin: 4px 0 8px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px 3px 0; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { color: var(--muted); font-weight: 600; }
.tablewrap { overflow-x: auto; max-width: 100%; }
.note { color: var(--muted); font-size: 12px; }
.toolbar { position: sticky; top: var(--header, 90px); z-index: 4; background: var(--bg);
  display: flex; gap: 10px; align-items: center; flex-wrap: wrap; padding: 8px 0; }
.toolbar input[type=search] { flex: 1 1 260px; max-width: 420px; padding: 6px 10px;
  border: 1px solid var(--line); border-radius: 6px; background: var(--card); color: var(--fg);
  font: inherit; }
.toolbar select { padding: 5px; border: 1px solid var(--line); border-radius: 6px;
  background: var(--card); color: var(--fg); font: inherit; }
.count { color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 10px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 12px; content-visibility: auto; contain-intrinsic-size: auto 330px;
  scroll-margin-top: calc(var(--header, 90px) + 56px); }
.card.dead { opacity: .65; }
.card.flash { background: var(--flash); }
.card h3 { margin: 0; font-size: 14px; display: flex; gap: 8px; align-items: baseline; }
.card h3 .desc { font-size: 15px; overflow-wrap: anywhere; }
.card h3 .score { margin-left: auto; color: var(--muted); font-weight: 400; }
.card h3 a { color: var(--muted); text-decoration: none; font-weight: 400; }
.summary { font-style: italic; margin: 4px 0; }
.layerhead { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 6px 20px; }
@media (max-width: 900px) { .layerhead { grid-template-columns: 1fr; } }
.concepts { list-style: none; margin: 6px 0; padding: 0; }
.concepts li { display: grid; grid-template-columns: minmax(90px, 40%) 1fr 52px; gap: 6px;
  align-items: center; font-size: 12.5px; }
.concepts .name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.concepts .bar { height: 8px; background: var(--line); border-radius: 4px; overflow: hidden; }
.concepts .bar i { display: block; height: 100%; background: var(--bar); }
.concepts li.hit .name { font-weight: 700; }
.concepts .val { text-align: right; color: var(--muted); font-variant-numeric: tabular-nums; }
.exemplars { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; }
.pair { margin: 0; display: grid; grid-template-columns: auto auto; gap: 2px; }
.pair figcaption { grid-column: 1 / 3; font-size: 11px; color: var(--muted); }
.thumb { position: relative; width: 52px; height: 52px; background: var(--bg);
  border-radius: 3px; overflow: hidden; display: flex; align-items: center;
  justify-content: center; }
.thumb img { max-width: 52px; max-height: 52px; display: block; }
.thumb .on { position: relative; line-height: 0; }
.thumb canvas { position: absolute; image-rendering: auto; }
.thumb .box { position: absolute; border: 1.5px solid #ffe14d; outline: 1px solid #0008; }
.missing { font-size: 10px; color: var(--muted); text-align: center; padding: 4px; }
details.ev { margin-top: 6px; font-size: 12.5px; }
details.ev table { font-size: 12px; }
.sentinel { height: 1px; }
.empty { color: var(--muted); padding: 20px 0; }
"""

JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("nl-data").textContent);
  var images = data.images;
  var PAGE = 24;
  var states = [];
  // jet-like color stops for the activation heatmap: blue (silent) to red (strongest)
  var STOPS = [[0, 0, 160], [0, 90, 255], [0, 220, 220], [120, 240, 60], [255, 210, 0],
               [240, 60, 0], [160, 0, 0]];
  var LUT = [];
  for (var i = 0; i < 256; i++) {
    var t = i / 255 * (STOPS.length - 1), k = Math.min(Math.floor(t), STOPS.length - 2);
    var f = t - k, a = STOPS[k], b = STOPS[k + 1];
    LUT.push([0, 1, 2].map(function (c) { return Math.round(a[c] + (b[c] - a[c]) * f); }));
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  function fmt(x) {
    if (x === null || x === undefined) return "\u2014";
    if (typeof x !== "number") return String(x);
    if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2);
    return String(+x.toPrecision(4));
  }
  function pct(node, r) {
    node.style.left = r[0] + "%"; node.style.top = r[1] + "%";
    node.style.width = r[2] + "%"; node.style.height = r[3] + "%";
  }
  function heatmap(m) {
    var canvas = document.createElement("canvas");
    canvas.width = m.w; canvas.height = m.h;
    var ctx = canvas.getContext("2d");
    var pixels = ctx.createImageData(m.w, m.h), bytes = atob(m.v);
    for (var i = 0; i < bytes.length; i++) {
      var v = bytes.charCodeAt(i), c = LUT[v];
      pixels.data[4 * i] = c[0]; pixels.data[4 * i + 1] = c[1]; pixels.data[4 * i + 2] = c[2];
      // the whole region is tinted, strong activation most: the photo stays visible
      pixels.data[4 * i + 3] = Math.round(64 + v * 0.55);
    }
    ctx.putImageData(pixels, 0, 0);
    return canvas;
  }
  function thumb(index, label) {
    var box = el("div", "thumb");
    if (index === null || index === undefined) {
      box.appendChild(el("div", "missing", label));
      return box;
    }
    var img = el("img");
    img.src = images[index]; img.alt = label; img.decoding = "async";
    box.appendChild(img);
    return box;
  }
  function source(ex) {
    var box = el("div", "thumb src");
    if (ex.src === null || ex.src === undefined) {
      box.appendChild(el("div", "missing", "no source"));
      return box;
    }
    var on = el("div", "on"), img = el("img");
    img.src = images[ex.src]; img.alt = "source image"; img.decoding = "async";
    on.appendChild(img);
    if (ex.map && ex.reg) { var cv = heatmap(ex.map); pct(cv, ex.reg); on.appendChild(cv); }
    if (ex.box) { var b = el("div", "box"); pct(b, ex.box); on.appendChild(b); }
    box.appendChild(on);
    return box;
  }
  function table(t) {
    var wrap = el("div", "tablewrap"), tab = el("table"), head = el("tr");
    t.cols.forEach(function (c) { head.appendChild(el("th", null, c)); });
    tab.appendChild(head);
    t.rows.forEach(function (row) {
      var tr = el("tr");
      row.forEach(function (cell) { tr.appendChild(el("td", null, cell)); });
      tab.appendChild(tr);
    });
    wrap.appendChild(el("div", "note", t.t));
    wrap.appendChild(tab);
    if (t.more) wrap.appendChild(el("div", "note", t.more + " more rows"));
    return wrap;
  }
  function card(L, n, q) {
    var c = el("article", "card" + (n.dead ? " dead" : ""));
    c.id = "n-" + L.i + "-" + n.u;
    var h = el("h3"), link = el("a", null, "#" + n.u);
    link.href = "#" + c.id; link.title = "link to this neuron";
    h.appendChild(link);
    h.appendChild(el("span", "desc", n.dead ? "(dead)" : (n.c.length ? n.c[0][0] : "")));
    if (!n.dead && n.c.length) h.appendChild(el("span", "score", fmt(n.c[0][1])));
    c.appendChild(h);
    if (n.s) c.appendChild(el("p", "summary", n.s));
    var meta = [];
    if (n.cls) meta.push("class: " + n.cls);
    if (n.sim !== null && n.sim !== undefined) meta.push("similarity " + fmt(n.sim));
    if (n.vlm && n.vlm.length) meta.push("describer: " + n.vlm.join(", "));
    if (n.max !== null && n.max !== undefined) meta.push("max activation " + fmt(n.max));
    if (meta.length) c.appendChild(el("div", "note", meta.join(" \u00b7 ")));
    if (n.c.length) {
      // bars on the neuron's own scale (from 0, or its lowest score when negative)
      var vals = n.c.map(function (p) { return p[1]; }).filter(function (v) { return v !== null; });
      var lo = Math.min.apply(null, [0].concat(vals)), hi = Math.max.apply(null, [lo].concat(vals));
      var ol = el("ol", "concepts"), span = (hi - lo) || 1;
      n.c.forEach(function (pair) {
        var li = el("li", q && String(pair[0]).toLowerCase().indexOf(q) >= 0 ? "hit" : null);
        var bar = el("span", "bar"), fill = el("i");
        var w = pair[1] === null ? 0 : Math.max(2, Math.min(100, 100 * (pair[1] - lo) / span));
        fill.style.width = w + "%"; bar.appendChild(fill);
        var name = el("span", "name", pair[0]); name.title = pair[0];
        li.appendChild(name); li.appendChild(bar); li.appendChild(el("span", "val", fmt(pair[1])));
        ol.appendChild(li);
      });
      c.appendChild(ol);
    }
    if (n.ex.length) {
      var strip = el("div", "exemplars");
      n.ex.forEach(function (ex, rank) {
        var fig = el("figure", "pair");
        fig.title = (ex.path || "") + (ex.file ? "\npatch: " + ex.file : "");
        fig.appendChild(thumb(ex.p, "no patch"));
        if (!ex.whole) fig.appendChild(source(ex));
        fig.appendChild(el("figcaption", null, "#" + (rank + 1) + " act " + fmt(ex.a)));
        strip.appendChild(fig);
      });
      c.appendChild(strip);
    }
    if (n.ev && n.ev.length) {
      var d = el("details", "ev");
      d.appendChild(el("summary", null, "evaluation (" + n.ev.length + ")"));
      n.ev.forEach(function (t) { d.appendChild(table(t)); });
      c.appendChild(d);
    }
    return c;
  }

  function matchScore(n, q) {
    if (!n._lc) n._lc = n.c.map(function (p) { return String(p[0]).toLowerCase(); });
    var best = null;
    for (var i = 0; i < n._lc.length; i++) {
      if (n._lc[i].indexOf(q) >= 0 && (best === null || n.c[i][1] > best)) best = n.c[i][1];
    }
    return best;
  }
  var SORTS = {
    unit: function (a, b) { return a.n.u - b.n.u; },
    score: function (a, b) { return b.key - a.key || a.n.u - b.n.u; },
    low: function (a, b) { return a.key - b.key || a.n.u - b.n.u; },
    sim: function (a, b) { return b.sim - a.sim || a.n.u - b.n.u; },
    act: function (a, b) { return b.act - a.act || a.n.u - b.n.u; }
  };
  function num(x, dflt) { return x === null || x === undefined ? dflt : x; }
  function apply(st) {
    var q = st.search.value.trim().toLowerCase();
    var unit = /^#?\d+$/.test(q) ? +q.replace("#", "") : -1;
    var hide = st.hide.checked, order = st.sort.value, list = [];
    st.L.neurons.forEach(function (n) {
      if (hide && n.dead) return;
      var top = n.c.length && !n.dead ? n.c[0][1] : null, key = top;
      if (q) {
        key = n.u === unit ? top : matchScore(n, q);
        if (key === null && n.u !== unit) return;
      }
      var low = order === "low";
      list.push({ n: n, key: num(key, low ? Infinity : -Infinity),
                  sim: num(n.sim, -Infinity), act: num(n.max, -Infinity) });
    });
    list.sort(SORTS[order] || SORTS.unit);
    st.list = list; st.shown = 0; st.q = q; st.grid.textContent = "";
    st.count.textContent = list.length + " of " + st.L.neurons.length + " neurons" +
      (q && order !== "unit" ? " (sorted by the matching concept's score)" : "");
    st.empty.hidden = list.length > 0;
    more(st, PAGE);
  }
  function more(st, count) {
    var end = Math.min(st.list.length, st.shown + count), frag = document.createDocumentFragment();
    for (var i = st.shown; i < end; i++) frag.appendChild(card(st.L, st.list[i].n, st.q));
    st.grid.appendChild(frag);
    st.shown = end;
    requestAnimationFrame(function () { fill(st); });
  }
  function fill(st) {
    // the observer only reports changes: keep filling while the sentinel stays in view
    if (st.section.hidden || st.shown >= st.list.length) return;
    if (st.sentinel.getBoundingClientRect().top < window.innerHeight + 800) more(st, PAGE);
  }
  function toGrid(st) {
    // a new list starts at its first card, not wherever the old list was scrolled to
    var bar = st.section.querySelector(".toolbar").getBoundingClientRect();
    var top = st.grid.getBoundingClientRect().top - bar.bottom;
    if (top < 0) window.scrollBy(0, top - 8);
  }
  function setup(L) {
    var section = document.getElementById("layer-" + L.i);
    var st = { L: L, section: section, list: [], shown: 0,
      search: section.querySelector("input[type=search]"), sort: section.querySelector("select"),
      hide: section.querySelector("input[type=checkbox]"), grid: section.querySelector(".grid"),
      count: section.querySelector(".count"), empty: section.querySelector(".empty"),
      sentinel: section.querySelector(".sentinel"), ready: false };
    var timer = null;
    var update = function () { apply(st); toGrid(st); };
    st.search.addEventListener("input", function () {
      clearTimeout(timer); timer = setTimeout(update, 120);
    });
    st.sort.addEventListener("change", update);
    st.hide.addEventListener("change", update);
    section.addEventListener("click", function (event) {
      var chip = event.target.closest("[data-q]");
      if (!chip) return;
      st.search.value = chip.getAttribute("data-q");
      if (st.sort.value === "unit") st.sort.value = "score";
      apply(st); toGrid(st);
    });
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(function (entries) {
        if (entries[0].isIntersecting) fill(st);
      }, { rootMargin: "800px 0px" }).observe(st.sentinel);
    } else {
      window.addEventListener("scroll", function () { fill(st); }, { passive: true });
    }
    states[L.i] = st;
    return st;
  }
  function ensure(i) {
    var st = states[i];
    if (!st.ready) { st.ready = true; apply(st); }
    return st;
  }
  function show(id) {
    var tabs = document.querySelectorAll("main > section");
    for (var i = 0; i < tabs.length; i++) tabs[i].hidden = tabs[i].id !== id;
    var links = document.querySelectorAll("nav a");
    for (var j = 0; j < links.length; j++) {
      links[j].classList.toggle("active", links[j].getAttribute("data-tab") === id);
    }
  }
  function route() {
    var hash = decodeURIComponent(location.hash.slice(1)), m = /^n-(\d+)-(\d+)$/.exec(hash);
    if (m && states[+m[1]]) { reveal(+m[1], +m[2]); return; }
    if (/^layer-\d+$/.test(hash) && states[+hash.slice(6)]) {
      show(hash); ensure(+hash.slice(6)); return;
    }
    if (hash === "overview") { show("overview"); return; }
    var first = data.layers.length ? "layer-0" : "overview";
    show(first);
    if (data.layers.length) ensure(0);
  }
  function reveal(i, unit) {
    show("layer-" + i);
    var st = ensure(i), at = -1;
    var find = function () {
      for (var k = 0; k < st.list.length; k++) if (st.list[k].n.u === unit) return k;
      return -1;
    };
    at = find();
    if (at < 0) { st.search.value = ""; st.hide.checked = false; apply(st); at = find(); }
    if (at < 0) return;
    if (at >= st.shown) more(st, at + 1 - st.shown);
    var node = document.getElementById("n-" + i + "-" + unit);
    if (!node) return;
    node.scrollIntoView({ block: "start" });
    node.classList.add("flash");
    setTimeout(function () { node.classList.remove("flash"); }, 1600);
  }
  function headerHeight() {
    var h = document.querySelector("header").getBoundingClientRect().height;
    document.documentElement.style.setProperty("--header", h + "px");
  }

  data.layers.forEach(setup);
  headerHeight();
  window.addEventListener("resize", headerHeight);
  window.addEventListener("hashchange", route);
  route();
  // when the first cards were on the page, in ms since navigation (tests read it)
  document.documentElement.setAttribute("data-ready", String(Math.round(performance.now())));
})();
"""
