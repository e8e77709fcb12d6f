"""`python -m cdsrules COMMAND ...` is `cdsrules COMMAND ...`."""
import sys

from cdsrules.cli import main

sys.exit(main())
