import sys

from lipslib.cli import main

sys.exit(main())
