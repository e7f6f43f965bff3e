import sys

from spiritlens.cli import main

sys.exit(main())
