"""Side by side with the tools users pick today: dbt, a hand-kept psql script, pg_cron.

Run ``python -m benchmarks.peers [--quick]`` from the repository root. The other benchmark
scripts import their helpers as the top-level module ``_common`` (they run as scripts); this
package puts ``benchmarks/`` on ``sys.path`` so that it shares those very helpers.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent.parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
