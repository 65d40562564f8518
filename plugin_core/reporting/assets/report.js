
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
    var c = el("article", "card" + (n.dead ? " dead" : (n.un ? " unexplained" : "")));
    c.id = "n-" + L.i + "-" + n.u;
    var h = el("h3"), link = el("a", null, "#" + n.u);
    link.href = "#" + c.id; link.title = "link to this neuron";
    h.appendChild(link);
    var label = n.dead ? "(dead)" : (n.un ? "(unexplained)" : (n.c.length ? n.c[0][0] : ""));
    h.appendChild(el("span", "desc", label));
    if (!n.dead && !n.un && n.c.length) h.appendChild(el("span", "score", fmt(n.c[0][1])));
    c.appendChild(h);
    if (n.s) c.appendChild(el("p", "summary", n.s));
    var meta = [];
    if (n.cls) meta.push("class: " + n.cls);
    if (n.p !== null && n.p !== undefined) {
      meta.push("p = " + fmt(n.p) + (n.un ? " (no concept fits better than chance; the " +
                "ranking is not a label)" : ""));
    }
    if (n.sim !== null && n.sim !== undefined) meta.push("similarity " + fmt(n.sim));
    if (n.cl !== null && n.cl !== undefined) meta.push("clarity " + fmt(n.cl));
    if (n.g && n.g.length > 1) {
      meta.push("polysemantic: " + n.g.map(function (g) { return g[0] + " (" + g[1] + ")"; })
        .join(", "));
    }
    if (n.r) meta.push(n.r + " other unit" + (n.r > 1 ? "s share" : " shares") + " its label");
    if (n.ver) meta.push(n.ver);
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
    act: function (a, b) { return b.act - a.act || a.n.u - b.n.u; },
    clarity: function (a, b) { return b.cl - a.cl || a.n.u - b.n.u; }
  };
  function num(x, dflt) { return x === null || x === undefined ? dflt : x; }
  // the clarity and exemplar-group filters of a toolbar: true when n passes them
  function character(bar) {
    var min = parseFloat(bar.querySelector(".clarity").value), poly = bar.querySelector(".poly").value;
    return function (n) {
      if (!isNaN(min) && !(n.cl !== null && n.cl !== undefined && n.cl >= min)) return false;
      var groups = n.g ? n.g.length : 0;
      if (poly === "poly" && groups < 2) return false;
      if (poly === "mono" && groups !== 1) return false;
      return true;
    };
  }
  function apply(st) {
    var q = st.search.value.trim().toLowerCase();
    var unit = /^#?\d+$/.test(q) ? +q.replace("#", "") : -1;
    var hide = st.hide.checked, order = st.sort.value, list = [];
    var passes = character(st.section.querySelector(".toolbar"));
    st.L.neurons.forEach(function (n) {
      if (hide && (n.dead || n.un)) return;
      if (!passes(n)) return;
      var top = n.c.length && !n.dead && !n.un ? n.c[0][1] : null, key = top;
      if (q) {
        key = n.u === unit ? top : matchScore(n, q);
        if (key === null && n.u !== unit) return;
      }
      var low = order === "low";
      list.push({ n: n, key: num(key, low ? Infinity : -Infinity),
                  sim: num(n.sim, -Infinity), act: num(n.max, -Infinity),
                  cl: num(n.cl, -Infinity) });
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
      hide: section.querySelector("input.hide"), grid: section.querySelector(".grid"),
      count: section.querySelector(".count"), empty: section.querySelector(".empty"),
      sentinel: section.querySelector(".sentinel"), ready: false };
    var timer = null;
    var update = function () { apply(st); toGrid(st); };
    st.search.addEventListener("input", function () {
      clearTimeout(timer); timer = setTimeout(update, 120);
    });
    st.sort.addEventListener("change", update);
    st.hide.addEventListener("change", update);
    section.querySelector(".clarity").addEventListener("input", update);
    section.querySelector(".poly").addEventListener("change", update);
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
    if ((hash === "ask" || hash === "compare") && document.getElementById(hash)) {
      show(hash); return;
    }
    show("overview");
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

  // -- the Ask tab: a free-text query ranked with the page's word table ---------------
  function askSetup(table) {
    var section = document.getElementById("ask");
    if (!section || !table) return;
    var dim = table.dim, bytes = atob(table.vectors), index = {}, skip = {};
    var vectors = new Float32Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) {
      var b = bytes.charCodeAt(i);
      vectors[i] = (b > 127 ? b - 256 : b) / 127;
    }
    table.texts.forEach(function (t, k) { index[t.toLowerCase()] = k; });
    table.skip.forEach(function (w) { skip[w] = true; });
    var input = section.querySelector("input.ask"), bar = section.querySelector(".toolbar");
    var out = section.querySelector("table.answers"), count = section.querySelector(".count");
    function embed(q) {
      var rows = [], unknown = [];
      if (index.hasOwnProperty(q)) rows.push(index[q]);
      else (q.match(/[a-z][a-z'-]*/g) || []).forEach(function (w) {
        if (index.hasOwnProperty(w)) { if (!skip[w] || q.indexOf(" ") < 0) rows.push(index[w]); }
        else unknown.push(w);
      });
      if (!rows.length) return { v: null, unknown: unknown };
      var v = new Float32Array(dim), norm = 0;
      rows.forEach(function (r) { for (var d = 0; d < dim; d++) v[d] += vectors[r * dim + d]; });
      for (var d = 0; d < dim; d++) norm += v[d] * v[d];
      norm = Math.sqrt(norm) || 1;
      for (var e = 0; e < dim; e++) v[e] /= norm;
      return { v: v, unknown: unknown };
    }
    function cosine(v, k) {
      var dot = 0, norm = 0;
      for (var d = 0; d < dim; d++) { var x = vectors[k * dim + d]; dot += v[d] * x; norm += x * x; }
      return dot / (Math.sqrt(norm) || 1);
    }
    function run() {
      var q = input.value.trim().toLowerCase();
      out.textContent = "";
      if (!q) { count.textContent = ""; return; }
      var e = embed(q);
      if (!e.v) { count.textContent = "no known word in the query"; return; }
      var cache = {}, passes = character(bar), found = [];
      function sim(concept) {
        var k = index[String(concept).toLowerCase()];
        if (k === undefined) return null;
        if (!(k in cache)) cache[k] = cosine(e.v, k);
        return cache[k];
      }
      data.layers.forEach(function (L) {
        L.neurons.forEach(function (n) {
          if (n.dead || !n.c.length || !passes(n)) return;
          var best = -Infinity, via = null;
          var consider = function (concept, weight) {
            var c = sim(concept);
            if (c !== null && c * weight > best) { best = c * weight; via = concept; }
          };
          n.c.forEach(function (p, r) { consider(p[0], Math.pow(0.9, r)); });
          (n.g || []).forEach(function (g) { consider(g[0], 0.9); });
          if (via !== null) found.push({ L: L, n: n, s: best, via: via });
        });
      });
      found.sort(function (a, b) { return b.s - a.s; });
      var head = el("tr");
      ["layer", "unit", "label", "match", "via", "clarity", "groups"].forEach(function (h) {
        head.appendChild(el("th", null, h));
      });
      out.appendChild(head);
      found.slice(0, 50).forEach(function (f) {
        var tr = el("tr"), link = el("a", null, "#" + f.n.u);
        link.href = "#n-" + f.L.i + "-" + f.n.u;
        var label = f.n.un ? "(unexplained)" : f.n.c[0][0];
        tr.appendChild(el("td", null, f.L.name));
        var cell = el("td"); cell.appendChild(link); tr.appendChild(cell);
        [label, fmt(f.s), f.via, fmt(f.n.cl), f.n.g ? String(f.n.g.length) : "\u2014"]
          .forEach(function (v) { tr.appendChild(el("td", null, v)); });
        out.appendChild(tr);
      });
      count.textContent = Math.min(50, found.length) + " of " + found.length + " units" +
        (e.unknown.length ? " (ignored, not in the table: " + e.unknown.join(", ") + ")" : "");
    }
    var timer = null;
    input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(run, 150); });
    bar.querySelector(".clarity").addEventListener("input", run);
    bar.querySelector(".poly").addEventListener("change", run);
  }

  data.layers.forEach(setup);
  askSetup(data.query);
  headerHeight();
  window.addEventListener("resize", headerHeight);
  window.addEventListener("hashchange", route);
  route();
  // when the first cards were on the page, in ms since navigation (tests read it)
  document.documentElement.setAttribute("data-ready", String(Math.round(performance.now())));
})();
