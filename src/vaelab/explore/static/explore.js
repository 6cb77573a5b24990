// vaelab explore: the page's only script. It talks to the server that sent it (/api/...), nothing else.
//
// Decoding keeps at most one request in flight: a slider move marks the code as changed, and when the
// request in flight returns, one request with the latest code goes out (the codes in between are never
// sent). So however fast the sliders move, the server sees no queue, and the image shown is always the
// decode of the last code once the sliders stop.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const PERIOD_MS = 3000; // one animation sweep, there and back
  const state = {
    info: null, index: null, z0: null, beta0: null, z: null, beta: null,
    a: null, b: null, rows: { z: [], beta: [] }, anim: null,
  };
  // Read by the tests and the latency benchmark.
  const stats = { times: [], decodes: 0, errors: [] };
  window.vaelabExplore = { state: state, stats: stats };

  // ---------------------------------------------------------------- helpers
  function showError(e) {
    const msg = (e && e.message) || String(e);
    stats.errors.push(msg);
    const el = $("error");
    el.textContent = msg;
    el.hidden = false;
  }
  function clearError() { $("error").hidden = true; }
  async function api(path) {
    const r = await fetch(path, { cache: "no-store" });
    let body = null;
    try { body = await r.json(); } catch (err) { body = null; }
    if (!r.ok) throw new Error((body && body.error) || ("HTTP " + r.status));
    return body;
  }
  function num(v) { return String(Math.round(v * 1e4) / 1e4); }
  function fmt2(v) { return (Math.round(v * 100) / 100).toFixed(2); }
  async function setImage(img, url) {
    img.src = url;
    try { await img.decode(); } catch (err) { /* replaced before it was decoded */ }
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---------------------------------------------------------------- decoding (one request in flight)
  let inflight = false;
  let dirty = false;
  function requestDecode() {
    dirty = true;
    if (!inflight) pump();
  }
  function codeQuery() {
    let q = "z=" + state.z.map(num).join(",");
    if (state.beta) q += "&beta=" + state.beta.map(num).join(",");
    return q;
  }
  async function pump() {
    if (!dirty || inflight) return;
    dirty = false;
    inflight = true;
    const t0 = performance.now();
    try {
      const r = await api("/api/decode?" + codeQuery());
      await setImage($("img-current"), r.image);
      const ms = performance.now() - t0;
      stats.decodes += 1;
      stats.times.push(ms);
      if (stats.times.length > 1000) stats.times.shift();
      showLatency();
      if (r.components) showComponents(r.components);
    } catch (e) {
      showError(e);
    } finally {
      inflight = false;
      if (dirty) pump();
    }
  }
  function showLatency() {
    const last = stats.times.slice(-50).slice().sort((x, y) => x - y);
    const med = last[Math.floor(last.length / 2)];
    $("latency").textContent = med.toFixed(1) + " ms (median of the last " + last.length + ")";
  }

  // ---------------------------------------------------------------- sliders
  function makeRow(kind, lat, parent) {
    const j = lat.index;
    const row = el("div", "slider");
    row.dataset.kind = kind;
    row.dataset.j = String(j);
    const name = el("span", "name", (kind === "z" ? "z" : "β") + j);
    const kl = el("span", "kl", "KL " + fmt2(lat.kl));
    const label = el("span", "label", lat.label || "");
    if (lat.label) label.title = "carries " + lat.label + " (mutual information / factor entropy)";
    const play = el("button", "play", "▶");
    play.type = "button";
    play.title = "animate " + name.textContent + " through its range";
    const input = document.createElement("input");
    input.type = "range";
    input.min = String(lat.range[0]);
    input.max = String(lat.range[1]);
    input.step = "0.01";
    input.value = "0";
    input.setAttribute("aria-label", name.textContent);
    const out = el("output", "", "0");
    row.append(name, kl, label, play, input, out);
    parent.appendChild(row);
    const r = { kind: kind, j: j, row: row, input: input, out: out, play: play };
    input.addEventListener("input", () => {
      const v = parseFloat(input.value);
      (kind === "z" ? state.z : state.beta)[j] = v;
      out.textContent = v.toFixed(2);
      requestDecode();
    });
    play.addEventListener("click", () => toggleAnimation(r));
    state.rows[kind].push(r);
    return r;
  }
  function setRow(r, v) {
    // widen the slider when a code falls outside it (an unusual image, a component's mean)
    if (v < parseFloat(r.input.min)) r.input.min = String(Math.floor(v));
    if (v > parseFloat(r.input.max)) r.input.max = String(Math.ceil(v));
    r.input.value = String(v);
    r.out.textContent = v.toFixed(2);
  }
  function syncSliders() {
    for (const r of state.rows.z) setRow(r, state.z[r.j]);
    if (state.beta) for (const r of state.rows.beta) setRow(r, state.beta[r.j]);
  }

  // ---------------------------------------------------------------- animation of one latent
  function stopAnimation() {
    if (!state.anim) return;
    state.anim.r.row.classList.remove("playing");
    state.anim.r.play.textContent = "▶";
    state.anim = null;
  }
  function toggleAnimation(r) {
    const same = state.anim && state.anim.r === r;
    stopAnimation();
    if (same) return;
    const lo = parseFloat(r.input.min), hi = parseFloat(r.input.max);
    const v = parseFloat(r.input.value);
    const x = Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
    const phase = Math.acos(1 - 2 * x) / (2 * Math.PI); // start where the slider is
    state.anim = { r: r, lo: lo, hi: hi, t0: performance.now() - phase * PERIOD_MS };
    r.row.classList.add("playing");
    r.play.textContent = "■";
    requestAnimationFrame(tick);
  }
  function tick(now) {
    const a = state.anim;
    if (!a) return;
    const p = ((now - a.t0) / PERIOD_MS) % 1;
    const v = a.lo + (a.hi - a.lo) * (0.5 - 0.5 * Math.cos(2 * Math.PI * p));
    (a.r.kind === "z" ? state.z : state.beta)[a.r.j] = v;
    setRow(a.r, v);
    requestDecode();
    requestAnimationFrame(tick);
  }

  // ---------------------------------------------------------------- images
  async function loadImage(index) {
    const r = await api("/api/image?index=" + index);
    stopAnimation();
    state.index = r.index;
    state.z0 = r.z.slice();
    state.beta0 = r.beta ? r.beta.slice() : null;
    state.z = r.z.slice();
    state.beta = r.beta ? r.beta.slice() : null;
    $("index").value = String(r.index);
    $("img-index").textContent = r.index;
    await Promise.all([setImage($("img-original"), r.original), setImage($("img-recon"), r.reconstruction)]);
    if (r.factors) {
      r.factors.forEach((c, k) => { const s = $("factor-" + k); if (s) s.value = String(c); });
    }
    syncSliders();
    requestDecode();
    return r;
  }
  function checkedIndex(input) {
    const n = state.info.images;
    const v = Number(input.value);
    if (!Number.isInteger(v) || v < 0 || v >= n) {
      throw new Error("image index must be an integer 0.." + (n - 1) + ", got " + (input.value || "nothing"));
    }
    return v;
  }
  function randomIndex() { return Math.floor(Math.random() * state.info.images); }
  function run(fn) {
    return async function () {
      try { clearError(); await fn(); } catch (e) { showError(e); }
    };
  }

  // ---------------------------------------------------------------- interpolation
  async function setEnd(which, index) {
    let z, beta, url;
    if (index === state.index) {
      z = state.z0.slice(); beta = state.beta0 ? state.beta0.slice() : null; url = $("img-original").src;
    } else {
      const r = await api("/api/image?index=" + index);
      z = r.z; beta = r.beta; url = r.original;
    }
    state[which] = { index: index, z: z, beta: beta };
    await setImage($(which === "a" ? "img-a" : "img-b"), url);
    $(which === "a" ? "a-index" : "b-label").textContent = "image " + index;
    $("interp").disabled = !(state.a && state.b);
    $("interp").value = "0";
  }
  function interpolate() {
    const t = parseFloat($("interp").value);
    const a = state.a, b = state.b;
    state.z = a.z.map((v, i) => (1 - t) * v + t * b.z[i]);
    if (a.beta && b.beta) state.beta = a.beta.map((v, i) => (1 - t) * v + t * b.beta[i]);
    $("interp-t").textContent = ", t = " + t.toFixed(2);
    stopAnimation();
    syncSliders();
    requestDecode();
  }

  // ---------------------------------------------------------------- UG-VAE
  function showComponents(p) {
    const box = $("components");
    box.textContent = "";
    const top = p.indexOf(Math.max.apply(null, p));
    p.forEach((v, k) => {
      const row = el("div", "comp" + (k === top ? " top" : ""));
      const bar = el("div", "bar");
      const fill = el("span");
      fill.style.width = (100 * v).toFixed(1) + "%";
      bar.appendChild(fill);
      row.append(el("span", "", "d=" + k), bar, el("span", "", v.toFixed(3)));
      box.appendChild(row);
    });
  }
  async function goComponent() {
    const k = $("component-select").value;
    const r = await api("/api/component?k=" + k + "&beta=" + state.beta.map(num).join(","));
    stopAnimation();
    state.z = r.z.slice();
    syncSliders();
    requestDecode();
  }

  // ---------------------------------------------------------------- save
  function savePng() {
    const img = $("img-current");
    if (!img.src) return;
    const a = $("download");
    a.href = img.src;
    a.download = state.info.run + "_step" + state.info.step + "_image" + state.index + ".png";
    a.click();
  }

  // ---------------------------------------------------------------- start
  function buildFactorPicker(info) {
    if (!info.factors.length) return;
    const box = $("factor-selects");
    info.factors.forEach((f, k) => {
      const label = el("label", "", f.name);
      const sel = document.createElement("select");
      sel.id = "factor-" + k;
      sel.dataset.name = f.name;
      sel.appendChild(new Option("any", ""));
      f.values.forEach((v, c) => sel.appendChild(new Option(v, String(c))));
      label.appendChild(sel);
      box.appendChild(label);
    });
    $("factor-picker").hidden = false;
    $("find").addEventListener("click", run(async () => {
      const q = [];
      info.factors.forEach((f, k) => {
        const v = $("factor-" + k).value;
        if (v !== "") q.push(encodeURIComponent(f.name) + "=" + v);
      });
      const r = await api("/api/find?" + q.join("&"));
      $("find-note").textContent = r.exact ? "" : "no image has all of these; showing the nearest";
      await loadImage(r.index);
    }));
  }

  async function start() {
    const info = await api("/api/info");
    state.info = info;
    document.title = info.run + " — vaelab explore";
    $("title").textContent = info.run;
    $("subtitle").textContent = info.objective + " · " + info.net + " · " + info.dataset + " (" +
      info.images.toLocaleString("en") + " images) · " + info.latent_dim + " latents · checkpoint step " +
      info.step.toLocaleString("en");
    $("kl-batch").textContent = String(info.kl_batch);
    $("eval-note").textContent = info.eval;
    $("index").max = String(info.images - 1);
    $("b-index").max = String(info.images - 1);
    if (!info.latents.some((l) => l.label)) $("right").classList.add("nolabels");
    const live = info.latents.filter((l) => !l.dead), dead = info.latents.filter((l) => l.dead);
    live.forEach((l) => makeRow("z", l, $("sliders")));
    dead.forEach((l) => makeRow("z", l, $("dead-sliders")));
    if (dead.length) {
      $("dead").hidden = false;
      $("dead-summary").textContent = dead.length + " switched-off latent" + (dead.length > 1 ? "s" : "") +
        " (KL ≤ " + info.dead_kl + " nats)";
    }
    if (!live.length) $("sliders").appendChild(el("p", "note", "every latent is switched off (KL ≤ " + info.dead_kl + " nats)"));
    if (info.global_latent) {
      info.global_latent.beta.forEach((l) => makeRow("beta", l, $("beta-sliders")));
      $("beta-section").hidden = false;
      $("ug-panel").hidden = false;
      for (let k = 0; k < info.global_latent.components; k++) $("component-select").appendChild(new Option(String(k), String(k)));
      $("component-go").addEventListener("click", run(goComponent));
    }
    buildFactorPicker(info);

    $("show").addEventListener("click", run(() => loadImage(checkedIndex($("index")))));
    $("index").addEventListener("keydown", (e) => { if (e.key === "Enter") $("show").click(); });
    $("random").addEventListener("click", run(() => loadImage(randomIndex())));
    $("reset").addEventListener("click", () => {
      stopAnimation();
      state.z = state.z0.slice();
      state.beta = state.beta0 ? state.beta0.slice() : null;
      syncSliders();
      requestDecode();
    });
    $("save").addEventListener("click", savePng);
    $("set-a").addEventListener("click", run(() => setEnd("a", state.index)));
    $("set-b").addEventListener("click", run(() => setEnd("b", checkedIndex($("b-index")))));
    $("interp").addEventListener("input", interpolate);

    await loadImage(info.start);
    const other = info.images > 1 ? (info.start + Math.floor(info.images / 2)) % info.images : info.start;
    $("b-index").value = String(other);
    await setEnd("a", state.index);
    await setEnd("b", other);
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", run(start));
})();
