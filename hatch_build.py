"""Build hook: compile s25rbl/dns/_fastpath.c (cached UDP answers in C) with the system's C
compiler, into the source tree, so that editable installs import it as wheels do.

Anything that goes wrong (no compiler, no Python headers, not Linux) is a warning: the
package installs without the extension and the server answers on the plain path.
``python hatch_build.py`` builds it in place, for development.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "s25rbl" / "dns" / "_fastpath.c"


def target(root: Path = ROOT) -> Path:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return root / "s25rbl" / "dns" / f"_fastpath{suffix}"


def compile_extension(output: Path | None = None) -> Path | None:
    """Compile the extension to ``output`` (default: beside its source); None, with a
    warning on stderr, if it cannot be built here."""
    output = output or target()
    if not sys.platform.startswith("linux"):
        print("s25rbl: the C fast path is built on Linux only; using the plain path", file=sys.stderr)
        return None
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    command = [
        *compiler,
        "-O2",
        "-fPIC",
        "-shared",
        "-Wall",
        "-fno-strict-aliasing",
        f"-I{include}",
        str(SOURCE),
        "-o",
        str(output),
    ]
    partial = output.with_name(output.name + ".tmp")
    command[-1] = str(partial)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"s25rbl: no C compiler ({exc}); the C fast path is not built", file=sys.stderr)
        return None
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        print(
            f"s25rbl: the C fast path did not build; using the plain path:\n{result.stderr[-2000:]}",
            file=sys.stderr,
        )
        return None
    partial.replace(output)  # atomically: a running process keeps the file it mapped
    return output


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # only ``python hatch_build.py`` without hatchling
    BuildHookInterface = object  # type: ignore[assignment,misc]


class FastPathHook(BuildHookInterface):  # type: ignore[type-arg,misc,unused-ignore]
    """Compiles the extension for wheels and editable installs; never fails the build."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if os.environ.get("S25RBL_NO_EXTENSION"):
            return
        built = compile_extension()
        if built is None:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if self.target_name == "wheel" and version != "editable":
            build_data["force_include"][str(built)] = f"s25rbl/dns/{built.name}"


if __name__ == "__main__":
    print(compile_extension() or "not built")
