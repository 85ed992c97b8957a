"""The ``fieldtrust`` command: thin wrappers that parse arguments and call the packages."""
