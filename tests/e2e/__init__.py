"""Browser end-to-end tests (a package, so that package-scoped fixtures end with them)."""
