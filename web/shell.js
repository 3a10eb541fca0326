// Glassbox page shell: loading progress, error display and page state, before and after
// Python starts. A classic script, so it runs before PyScript's module and sees every event.
//
// window.glassboxShell = { setState, progress, fail } is the one place that draws the status
// and error panels; py/app/dom.py calls it too. window.glassbox_py(code) runs Python in the
// page and resolves to the JSON value of its last expression (registered by py/app/main.py).
"use strict";

(() => {
  const root = document.documentElement;
  const STATES = ["loading", "busy", "ready", "error"];
  const started = performance.now();
  const params = new URLSearchParams(location.search);
  // Seconds before a boot that never reports back is called a failure (?boot-timeout=N),
  // and before PyScript must have started Python at all (?stall-timeout=N).
  const bootTimeout = Number(params.get("boot-timeout")) || 180;
  const stallTimeout = Number(params.get("stall-timeout")) || 30;
  let pyscriptStarted = false;

  // PyScript's progress messages, in the order they arrive, with the share of the boot
  // done when each is seen. Other messages update the text but not the bar.
  const MILESTONES = [
    [/^Loading Pyodide$/, 0.05, "Downloading the Python runtime (Pyodide, about 17 MB)"],
    [/^Loaded Storage$/, 0.1, "Starting the Python runtime"],
    [/^Loading files$/, 0.55, "Loading Glassbox's Python files"],
    [/^Loaded files$/, 0.6, "Loaded Glassbox's Python files"],
    [/^Loading .*numpy/, 0.65, "Loading numpy"],
    [/^Loaded .*numpy/, 0.85, "Loaded numpy"],
    [/^Loaded Pyodide$/, 0.9, "Python is running"],
  ];

  const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
  let fraction = 0;
  let ticker = 0;

  // The status panel belongs to the boot ("loading"); "busy" (a run after boot) is shown
  // by the views themselves and by the cursor (web/app.css).
  function setState(state) {
    if (!STATES.includes(state)) throw new Error(`unknown page state ${state}`);
    root.dataset.state = state;
    if (state !== "loading") clearInterval(ticker);
    const status = $("status");
    if (status) status.hidden = state !== "loading";
  }

  // The bar only grows, unless `exact` (a download's own progress: bytes of the model).
  function progress(label, value, exact = false) {
    if (root.dataset.state === "error") return;
    if (typeof value === "number") {
      const clamped = Math.max(0, Math.min(1, value));
      fraction = exact ? clamped : Math.max(fraction, clamped);
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(0);
    $("status-label").textContent = `${label}…`;
    $("progress").value = fraction;
    $("status-detail").textContent = `${Math.round(fraction * 100)}% · ${seconds} s`;
  }

  // The line a person should read first: a Python traceback's last line, else the first.
  function headline(text) {
    const lines = text.split("\n").map((line) => line.trim()).filter(Boolean);
    if (lines[0]?.startsWith("Traceback") || /^PythonError: Traceback/.test(lines[0])) {
      return `Python error: ${lines[lines.length - 1]}`;
    }
    return lines[0] || "unknown error";
  }

  function fail(message, details = "") {
    const text = String(message || "unknown error").trim();
    if (root.dataset.state === "error") {
      // Keep the first cause on top; later ones go to the details.
      $("error-details").textContent += `\n\n${text}\n${details}`.trimEnd();
      return;
    }
    $("error-title").textContent = root.dataset.state === "loading"
      ? "Glassbox could not start" : "Glassbox stopped with an error";
    $("error-message").textContent = headline(text);
    $("error-details").textContent = `${text}\n${details}`.trim();
    $("error").hidden = false;
    setState("error");
  }

  window.glassboxShell = { setState, progress, fail };

  window.glassbox_py = async (code) => {
    if (typeof window.glassbox_py_json !== "function") {
      throw new Error(`Python is not running yet (page state: ${root.dataset.state})`);
    }
    const reply = JSON.parse(await window.glassbox_py_json(String(code)));
    if ("error" in reply) throw new Error(reply.error);
    return reply.value;
  };

  // Boot progress from PyScript (dispatched on window as "py:progress").
  addEventListener("py:progress", ({ detail }) => {
    pyscriptStarted = true;
    const text = String(detail);
    const hit = MILESTONES.find(([pattern]) => pattern.test(text));
    progress(hit ? hit[2] : text, hit ? hit[1] : undefined);
  });

  // Failures outside Python's own reporting: a script or wasm that does not load, a rejected
  // promise during boot, PyScript's own error banner (config errors, uncaught Python errors).
  addEventListener("error", (event) => {
    const where = event.filename ? ` (${event.filename}:${event.lineno})` : "";
    if (event.message) fail(`${event.message}${where}`, event.error?.stack || "");
    else if (event.target && event.target !== window) {
      fail(`Could not load ${event.target.src || event.target.href || event.target.tagName}`);
    }
  }, true);
  addEventListener("unhandledrejection", (event) => {
    const reason = event.reason;
    fail(reason?.message || String(reason), reason?.stack || "");
  });
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.classList?.contains("py-error")) {
          fail(node.textContent);
          node.remove();
        }
      }
    }
  }).observe(document, { childList: true, subtree: true });

  // A file the boot needs that the server does not have (HTTP 4xx/5xx): Pyodide would
  // otherwise wait forever on, e.g., a missing .wasm. While loading, every HTTP error is
  // fatal, so boot code must not probe for optional files. Only this site's files count: the
  // Hub loader (py/app/hub_loader.py) asks the Hub for optional files and handles its 404s.
  new PerformanceObserver((list) => {
    if (root.dataset.state !== "loading") return;
    for (const entry of list.getEntries()) {
      if (entry.responseStatus >= 400 && new URL(entry.name, location.href).origin === location.origin) {
        fail(`Could not load ${entry.name} (HTTP ${entry.responseStatus})`,
          "Run the set-up again (make serve), or check that the host serves every file.");
      }
    }
  }).observe({ type: "resource", buffered: true });

  // Issue 16: PyScript (and with it the Pyodide boot: seconds of main-thread work) starts once
  // the loading screen has been painted, so a slow device shows it at once instead of after
  // the boot's first long tasks (and Lighthouse's LCP does not wait on the runtime's downloads).
  // A tab in the background paints no frame: there it starts at once.
  let pyscriptRequested = false;
  const startPyScript = () => {
    if (pyscriptRequested) return;
    pyscriptRequested = true;
    const script = document.createElement("script");
    script.type = "module";
    script.src = "./vendor/pyscript/core.js";
    document.head.append(script);
  };

  document.addEventListener("DOMContentLoaded", () => {
    if (document.visibilityState === "hidden") startPyScript();
    else requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(startPyScript, 0)));  // the next frame: this one shown
    document.addEventListener("visibilitychange", startPyScript, { once: true });
    progress("Loading PyScript", 0.02);
    ticker = setInterval(() => progress($("status-label").textContent.replace(/…$/, "")), 1000);
    setTimeout(() => {
      if (root.dataset.state !== "loading" || pyscriptStarted) return;
      const defined = customElements.get("py-script") !== undefined;
      fail(defined ? `PyScript did not start Python within ${stallTimeout} s`
        : "PyScript did not start: its configuration (pyscript.toml) was not accepted",
      "See the browser console for PyScript's own message.");
    }, stallTimeout * 1000);
  });
  // <html data-waiting="hub"> (py/app/hub_loader.py): Python runs but waits for the visitor
  // or a long Hub download, which has its own progress and errors; check again later.
  const bootCheck = () => {
    if (root.dataset.state !== "loading") return;
    if (root.dataset.waiting) { setTimeout(bootCheck, bootTimeout * 1000); return; }
    fail(`Python did not start within ${bootTimeout} s`,
      `Last step: ${$("status-label")?.textContent || "none"}`);
  };
  setTimeout(bootCheck, bootTimeout * 1000);
})();
