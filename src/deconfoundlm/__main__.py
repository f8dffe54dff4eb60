import sys

from deconfoundlm.cli import main

sys.exit(main())
