"""`python -m bot` is the same as `jitpass`."""

from bot.cli import main

raise SystemExit(main())
