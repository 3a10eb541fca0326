# Glassbox set-up. Two commands on a fresh Debian/Ubuntu (Python 3.11+, Node 20+):
#   make serve   install what the app needs and serve it on http://127.0.0.1:8000/ (PORT=...)
#   make test    install what the tests need and run the whole suite
# Each step reruns only when its inputs changed (package-lock.json, requirements files).

PYTHON ?= python3
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: serve test vendor kernels check-tools

serve: vendor
	$(PY) tools/serve.py --port $(PORT)

test: vendor $(VENV)/.test-requirements
	$(PY) -m pytest

# vendor/ assembled, then .br/.gz copies of what the page downloads (tools/compress.py: minutes
# the first time, a second after), then the service worker's list.
vendor: node_modules/.package-lock.json $(VENV)/.requirements kernels
	$(PY) tools/vendor.py
	$(PY) tools/compress.py --quiet
	$(PY) tools/precache.py

# The numpy fallback's WebAssembly SIMD128 int8 matmul (wasm/linear_i8.c), an Emscripten
# side module that Pyodide links with ctypes.CDLL. Built by the pinned Zig (clang + wasm-ld):
# no debug info, stripped, so the same source and toolchain give the same bytes.
kernels: wasm/linear_i8.so

wasm/linear_i8.so: wasm/linear_i8.c $(VENV)/.build-requirements
	$(PY) -m ziglang cc -target wasm32-emscripten -O3 -msimd128 -fPIC -shared -nostdlib -g0 \
	  -Wl,--export=glassbox_linear_i8 -Wl,--strip-all -o $@ $< 2>&1 | { grep -v 'not yet stable' || true; }
	$(PY) tools/check_kernel.py $@

$(VENV)/.build-requirements: requirements-build.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-build.txt
	touch $@

check-tools:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Glassbox needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	@node -e 'process.exit(parseInt(process.versions.node) < 20 ? 1 : 0)' \
	  || { echo "Glassbox needs Node 20 or newer (with npm)"; exit 1; }

node_modules/.package-lock.json: package.json package-lock.json | check-tools
	npm ci --ignore-scripts --no-audit --no-fund

$(PY): | check-tools
	$(PYTHON) -m venv $(VENV)

$(VENV)/.requirements: requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@# py/ on the venv's path, so `.venv/bin/python -m glassbox` works from any folder.
	$(PY) -c 'import site, sys; open(site.getsitepackages()[0] + "/glassbox-src.pth", "w").write(sys.argv[1] + "\n")' "$(CURDIR)/py"
	touch $@

$(VENV)/.test-requirements: requirements-test.txt requirements.txt requirements-build.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-test.txt
	touch $@
