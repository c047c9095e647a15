"""Run every benchmark script in this folder, one after the other."""

import subprocess
import sys
from pathlib import Path

here = Path(__file__).parent
status = 0
for script in sorted(here.glob("bench_*.py")):
    print(f"\n### {script.name}\n", flush=True)
    status |= subprocess.call([sys.executable, str(script)])
sys.exit(status)
