"""`python -m bot` is the same as `jitpass`."""

from bot.cli.main import main

raise SystemExit(main())
