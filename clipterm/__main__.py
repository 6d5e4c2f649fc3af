"""`python -m clipterm` is the same as the `clipterm` console script."""

from clipterm.cli import main

raise SystemExit(main())
