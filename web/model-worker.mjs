// Glassbox's model worker (issue 16): Pyodide, numpy and the Glassbox core in a dedicated
// module worker, so that a forward pass never blocks the page. The page (py/app/worker_client.py)
// starts it with `new Worker("./web/model-worker.mjs", {type: "module"})`; py/app/worker.py
// does the rest (model, runner, messages). Every file comes from this origin: Pyodide from
// vendor/pyodide (numpy through its pyodide-lock.json), the Python files and shaders from the
// same [files] table as the page's pyscript.toml (so the list cannot drift from the page's).
import { loadPyodide } from "../vendor/pyodide/pyodide.mjs";

const early = [];  // messages that arrive before Python listens
self.onmessage = (event) => early.push(event);

async function boot() {
  const started = performance.now();
  const pyodide = await loadPyodide({ indexURL: new URL("../vendor/pyodide/", import.meta.url).href });
  await pyodide.loadPackage("numpy", { messageCallback: () => {} });
  const root = new URL("../", import.meta.url);
  const toml = await (await fetch(new URL("pyscript.toml", root))).text();
  const table = toml.slice(toml.indexOf("\n[files]\n"));
  const paths = [...table.matchAll(/^"\.\/([^"]+)" = /gm)].map((m) => m[1]);
  await Promise.all(paths.map(async (path) => {
    const response = await fetch(new URL(path, root));
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    const target = `/home/pyodide/${path}`;
    pyodide.FS.mkdirTree(target.slice(0, target.lastIndexOf("/")));
    pyodide.FS.writeFile(target, new Uint8Array(await response.arrayBuffer()));
  }));
  pyodide.runPython("import sys; sys.path.insert(0, '/home/pyodide/py')");
  const serve = pyodide.pyimport("app.worker").serve;
  serve(performance.now() - started, paths.length);
  for (const event of early.splice(0)) self.onmessage(event);
}

boot().catch((error) => {
  self.postMessage({ head: JSON.stringify({ op: "boot-failed", error: String(error && error.stack || error) }), buffers: [] });
});
