// Issue 16: start the model worker (web/model-worker.mjs) as the page loads, so that its Python
// boots alongside the page's own instead of after it. py/app/worker_client.py adopts it (and the
// messages it sent meanwhile) or ends it where the page computes itself: light mode
// (py/app/main.py). The light-mode test here is the cheap part of lightmode.decide.
"use strict";

(() => {
  const query = new URLSearchParams(location.search);
  let stored = null;
  try { stored = localStorage.getItem("glassbox-mode"); } catch (e) { /* storage disabled */ }
  const chosen = query.get("mode") || stored;
  const small = (navigator.deviceMemory && navigator.deviceMemory <= 4) ||
    (screen && Math.min(screen.width, screen.height) < 600);
  const light = chosen === "light" || (chosen !== "full" && small);
  // issue 16 (h16): Hub models (?model=hf:...) compute in the worker too.
  if (light || typeof Worker === "undefined") return;
  try {
    const worker = new Worker("./web/model-worker.mjs", { type: "module", name: "glassbox-model" });
    const early = [];
    worker.onmessage = (event) => early.push(event);
    worker.onerror = (event) => early.push(event);
    window.glassboxModelWorker = { worker, early };
  } catch (error) {
    window.glassboxModelWorker = { error: String(error) };
  }
})();
