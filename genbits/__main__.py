import sys

from genbits.cli import main

sys.exit(main())
