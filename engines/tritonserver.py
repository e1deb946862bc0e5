"""Import shim: the tritonserver wrapper lives in `engines.processes.tritonserver`.

`python -m engines.tritonserver prepare|serve REPO` keeps working: scripts/setup.sh and the
READMEs of written repositories run it.
"""

import sys

from engines.processes.tritonserver import (
    INSTALL_HINT,
    PYTRITON,
    Installation,
    TritonServer,
    TritonUnavailable,
    cache_dir,
    find_installation,
    main,
    prepare_stub_env,
)

__all__ = [
    "INSTALL_HINT",
    "PYTRITON",
    "Installation",
    "TritonServer",
    "TritonUnavailable",
    "cache_dir",
    "find_installation",
    "main",
    "prepare_stub_env",
]

if __name__ == "__main__":
    sys.exit(main())
