import sys

from .tui import main

sys.exit(main())
