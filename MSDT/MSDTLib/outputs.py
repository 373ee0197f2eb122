"""Writing command outputs safely: everything goes to a staging folder and replaces the output folder's
content only when the whole command succeeded, so a failure never leaves a partial scene behind."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_output(out: Path):
    """Yield a staging folder beside ``out``; on success its content replaces ``out``'s, on error it is
    deleted, so a failed command leaves nothing behind and never a partial scene."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".msdt-staging-", dir=out.parent))
    try:
        yield staging
        out.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
