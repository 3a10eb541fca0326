"""The GPU package stays platform-neutral: importing it needs neither wgpu nor the browser."""

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_importing_glassbox_gpu_loads_no_platform_module():
    code = ("import sys, glassbox.gpu, glassbox.gpu.browser, glassbox.gpu.native; "
            "print(sorted({'js', 'pyodide', 'pyscript', 'wgpu'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "py")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"imported at module level: {out.stdout}"
