"""Values and rules: imports nothing outside bot.domain (and the standard library / crypto libraries)."""
