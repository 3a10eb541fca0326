// Glassbox as an installable, offline app: registers the service worker (sw.js) once the page
// has booted, says whether the app is kept offline, offers "Update ready — reload" when a new
// version has been stored, handles the light/full mode switch, and offers "Install".
//
// <html data-offline="unsupported|off|installing|ready|failed"> carries the offline state
// (data-testid="offline-status" says it in words). ?sw=off skips (and unregisters) the worker.
// window.glassboxPwa = { registration, applyUpdate(), messages } is there for tests.
"use strict";

(() => {
  const root = document.documentElement;
  const params = new URLSearchParams(location.search);
  const MODE_KEY = "glassbox-mode"; // py/app/device.py reads the same key
  const pwa = { registration: null, messages: [], applyUpdate, install: null };
  window.glassboxPwa = pwa;
  const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

  function say(state, text) {
    root.dataset.offline = state;
    const line = $("offline-status");
    if (line) line.textContent = text;
  }

  // "Update ready — reload": shown when a new version waits while an old one is in charge.
  function offerUpdate(worker) {
    pwa.waiting = worker;
    const bar = $("update");
    if (bar) bar.hidden = false;
  }

  function applyUpdate() {
    const worker = pwa.waiting || pwa.registration?.waiting;
    if (!worker) return false;
    let reloading = false;
    navigator.serviceWorker.addEventListener("controllerchange", () => {
      if (!reloading) { reloading = true; location.reload(); }
    });
    worker.postMessage({ type: "skip-waiting" });
    return true;
  }

  function watch(registration) {
    pwa.registration = registration;
    const track = (worker) => {
      if (!worker) return;
      worker.addEventListener("statechange", () => {
        if (worker.state === "installed" && navigator.serviceWorker.controller) offerUpdate(worker);
        if (worker.state === "activated" && !navigator.serviceWorker.controller) ready();
      });
    };
    if (registration.waiting && navigator.serviceWorker.controller) offerUpdate(registration.waiting);
    track(registration.installing);
    registration.addEventListener("updatefound", () => track(registration.installing));
  }

  function ready() {
    say("ready", "Works offline: the app is stored on this device (the model too, once loaded).");
  }

  async function register() {
    if (pwa.registration) return;
    try {
      say("installing", "Storing the app on this device for offline use…");
      const registration = await navigator.serviceWorker.register("./sw.js", { scope: "./", updateViaCache: "none" });
      watch(registration);
      if (registration.active && !registration.installing) ready();
      await navigator.serviceWorker.ready;
      if (root.dataset.offline === "installing" && !registration.installing) ready();
    } catch (error) {
      say("failed", `Offline use is not available: ${error.message || error}`);
    }
  }

  if (!("serviceWorker" in navigator) || !window.isSecureContext) {
    root.dataset.offline = "unsupported";
  } else if (params.get("sw") === "off") {
    // No service worker on this visit; one registered earlier is removed (its caches stay),
    // so the next load comes straight from the server (handy while editing the app).
    root.dataset.offline = "off";
    navigator.serviceWorker.getRegistrations().then((all) => all.forEach((r) => r.unregister()));
  } else {
    navigator.serviceWorker.addEventListener("message", ({ data }) => {
      pwa.messages.push(data);
      if (data?.type === "precached" && !navigator.serviceWorker.controller) ready();
      if (data?.type === "precache-failed") {
        say("failed", `The offline copy could not be stored: ${data.message}`);
      }
    });
    // Register once the page has booted (ready) or failed (error), so storing ~20 MB does
    // not compete with the first load, and a broken version can still be replaced.
    const settled = () => ["ready", "error"].includes(root.dataset.state);
    if (settled()) register();
    else {
      new MutationObserver((_, observer) => {
        if (settled()) { observer.disconnect(); register(); }
      }).observe(root, { attributes: true, attributeFilter: ["data-state"] });
    }
  }

  // Installing as an app, where the browser offers it.
  addEventListener("beforeinstallprompt", (event) => {
    event.preventDefault();
    pwa.install = event;
    const button = $("install");
    if (button) button.hidden = false;
  });
  addEventListener("appinstalled", () => {
    const button = $("install");
    if (button) button.hidden = true;
  });

  document.addEventListener("click", async (event) => {
    const target = event.target.closest?.("[data-pwa]");
    if (!target) return;
    const action = target.dataset.pwa;
    if (action === "reload") {
      if (!applyUpdate()) location.reload();
    } else if (action === "install" && pwa.install) {
      pwa.install.prompt();
      await pwa.install.userChoice;
      pwa.install = null;
      target.hidden = true;
    } else if (action === "mode") {
      // The light/full switch (py/app/device.py draws it): remember, then start again.
      try { localStorage.setItem(MODE_KEY, target.dataset.mode); } catch { /* private mode */ }
      const url = new URL(location.href);
      url.searchParams.delete("mode");
      location.replace(url.href);
    }
  });
})();
