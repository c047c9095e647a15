import sys

from reglab.cli import main

sys.exit(main())
