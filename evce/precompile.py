"""Compile the project ahead of its starts: the bytecode of its modules and its OCPP validators.

Python writes a module's bytecode at its first import, unless told not to
(PYTHONDONTWRITEBYTECODE, set in many container images and on this project's CI machines):
then every process start compiled the project's ~90 modules again (~0.26 s of a web
process's start, which a reconnect storm's chargers wait for; cProfile of `import
evce.asgi`). The install steps (bin/run, bin/test, the benchmark) run this, as pip compiles
the packages it installs; a start then only reads. Python still reads bytecode when it is
told not to write it, and a module changed since is compiled again as usual.
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
NOT_INSTALLED = {"tests"}  # top-level packages that are not part of the running system


def project_packages() -> list[Path]:
    return sorted(path for path in BASE_DIR.iterdir()
                  if (path / "__init__.py").is_file() and path.name not in NOT_INSTALLED)


def main() -> int:
    compiled = all([compileall.compile_dir(path, quiet=1) for path in project_packages()])
    from chargers import frames, schemas

    schemas.compile_all(frames.EVERY_ACTION, keep=True)
    return 0 if compiled else 1


if __name__ == "__main__":
    sys.exit(main())
