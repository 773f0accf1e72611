"""`python -m benchmarks.gpu`: the speed and accuracy stages on a lent GPU machine (see benchmarks/driver.py).

This module imports no Keras: the lent machine has none until the wheels carried in .whl/ are installed into
/tmp/site (tools/transport/wheels.py); only then is benchmarks.driver, which imports keras_ultimus, loaded.
Its stages and flags: `python -m benchmarks.gpu --help`; the device calls: DEVELOPERS.md ("GPU runs").
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/gpu.py`
    sys.path.insert(0, str(ROOT))

from tools.transport.wheels import SITE, install_wheels, use_site  # noqa: E402


def log(message: str) -> None:
    """A line on stderr, before the driver's own log (steps.txt) exists."""
    print(f"[gpu] {message}", file=sys.stderr, flush=True)


def bring_packages(argv: list[str]) -> None:
    """Unless in a dry run: .whl/ into SITE when Keras or KerasTuner is missing, and SITE on the path if there."""
    if any(a.startswith("--dr") for a in argv):  # the dry run uses this machine's packages
        return
    if install_wheels(sorted((ROOT / ".whl").glob("*.whl")), SITE, log=log):
        use_site(SITE)


def main(argv: list[str] | None = None) -> int:
    """Bring the packages, then run the driver's stages."""
    bring_packages(sys.argv[1:] if argv is None else argv)
    from benchmarks.driver import main as run_stages

    return run_stages(argv)


if __name__ == "__main__":
    sys.exit(main())
