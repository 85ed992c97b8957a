"""Local services the project starts for itself on a machine that has none (demo, tests, bench)."""
