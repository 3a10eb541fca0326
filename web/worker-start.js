// Issue 16: start the model worker (web/model-worker.mjs) as the page loads, so that its Python
// boots alongside the page's own instead of after it. py/app/worker_client.py adopts it (and the
// messages it sent meanwhile). Every mode computes there: full and light mode, local and Hub
// models (the page computes itself only where the worker cannot start or load the model).
"use strict";

(() => {
  if (typeof Worker === "undefined") return;
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
