"""Development tools of the poolscope repository (not part of the package)."""
