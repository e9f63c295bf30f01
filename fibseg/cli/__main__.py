"""`python -m fibseg.cli`: the `fibseg` command."""

from . import main

raise SystemExit(main())
