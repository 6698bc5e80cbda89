"""`python -m vnpu ...` is the `vnpu` command."""
import sys

from vnpu.cli import main

sys.exit(main())
