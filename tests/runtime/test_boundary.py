"""The runtime runs on devices: it must import with every host-side package unavailable."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HOST_ONLY = ["pydantic", "typer", "jinja2", "fabric", "paramiko", "invoke", "rich", "ruamel",
             "onnx", "platformdirs", "click"]


def test_runtime_imports_without_host_packages() -> None:
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {HOST_ONLY!r}:
                    raise ImportError('blocked host-side package: ' + name)
                return None
        sys.meta_path.insert(0, Block())
        import edgedeploy.runtime as rt
        names = [m.name for m in pkgutil.walk_packages(rt.__path__, 'edgedeploy.runtime.')]
        for name in names:
            importlib.import_module(name)
        print(len(names))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 3
