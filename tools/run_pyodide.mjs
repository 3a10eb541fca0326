#!/usr/bin/env node
// Run Python under the vendored Pyodide in Node: Glassbox's core code, as the browser runs
// it, without a browser.
//
//   node tools/run_pyodide.mjs [options] FILE.py [ARGS...]
//   node tools/run_pyodide.mjs [options] -c "CODE" [ARGS...]
//
// Options:
//   --packages a,b     Pyodide packages to load first, from vendor/pyodide (default: numpy)
//   --mount HOST:DIR   mount a host folder read-write at DIR (repeatable)
//
// The repository's py/ and shaders/ are mounted at /glassbox/py and /glassbox/shaders (the
// same layout as the page's file system), /glassbox/py is put on sys.path, and
// sys.argv = [FILE or "-c", ARGS...]. Python's stdout and stderr are passed through.
// Exit status: 0 on success, 1 when the Python code raised (the traceback goes to stderr),
// the code of SystemExit when it called sys.exit, 2 on a usage error.
// Needs `npm ci` and `python3 tools/vendor.py` first. Node 20+, no other dependency.

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PYODIDE_DIR = path.join(ROOT, "vendor", "pyodide");
const USAGE = "usage: run_pyodide.mjs [--packages a,b] [--mount HOST:DIR] (FILE.py | -c CODE) [ARGS...]";

function usage(message) {
  process.stderr.write(`run_pyodide: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const options = { packages: ["numpy"], mounts: [], code: null, file: null, args: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--packages") {
      options.packages = (argv[++i] ?? usage("--packages needs a value")).split(",").filter(Boolean);
    } else if (arg === "--mount") {
      const spec = argv[++i] ?? usage("--mount needs HOST:DIR");
      const at = spec.lastIndexOf(":");
      if (at <= 0 || !spec.slice(at + 1).startsWith("/")) usage(`bad --mount ${spec}`);
      options.mounts.push([path.resolve(spec.slice(0, at)), spec.slice(at + 1)]);
    } else if (arg === "-c") {
      options.code = argv[++i] ?? usage("-c needs code");
      i++;
      break;
    } else if (arg.startsWith("-")) {
      usage(`unknown option ${arg}`);
    } else {
      options.file = arg;
      i++;
      break;
    }
  }
  if (options.code === null && options.file === null) usage("give a FILE or -c CODE");
  options.args = argv.slice(i);
  return options;
}

function mount(pyodide, hostDir, target) {
  if (!existsSync(hostDir)) usage(`no such folder to mount: ${hostDir}`);
  pyodide.FS.mkdirTree(target);
  pyodide.FS.mount(pyodide.FS.filesystems.NODEFS, { root: hostDir }, target);
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const entry = path.join(PYODIDE_DIR, "pyodide.mjs");
  if (!existsSync(entry)) {
    usage(`${entry} is missing: run \`npm ci && python3 tools/vendor.py\` first`);
  }
  const code = options.code ?? readFileSync(options.file, "utf8");
  const { loadPyodide } = await import(pathToFileURL(entry).href);
  const pyodide = await loadPyodide({
    indexURL: PYODIDE_DIR + path.sep,
    stdout: (line) => process.stdout.write(`${line}\n`),
    stderr: (line) => process.stderr.write(`${line}\n`),
  });
  if (options.packages.length) {
    await pyodide.loadPackage(options.packages, {
      messageCallback: () => {},
      errorCallback: (message) => process.stderr.write(`${message}\n`),
    });
  }
  for (const folder of ["py", "shaders"]) {
    if (existsSync(path.join(ROOT, folder))) mount(pyodide, path.join(ROOT, folder), `/glassbox/${folder}`);
  }
  for (const [hostDir, target] of options.mounts) mount(pyodide, hostDir, target);

  const run = pyodide.runPython(RUNNER);
  try {
    return await run(code, options.file ?? "<string>", pyodide.toPy(options.args));
  } finally {
    run.destroy();
  }
}

// Runs the user's code as __main__ and turns how it ended into an exit status, so that
// SystemExit and tracebacks behave as in CPython.
const RUNNER = `
import sys, traceback
from pyodide.code import eval_code_async

sys.path.insert(0, "/glassbox/py")

async def _run(code, filename, args):
    sys.argv = [filename if filename != "<string>" else "-c", *args]
    namespace = {"__name__": "__main__", "__file__": filename}
    try:
        await eval_code_async(code, globals=namespace, filename=filename)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return 0

_run
`;

process.exitCode = await main();
