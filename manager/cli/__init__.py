"""The command line: thin commands that parse, call the registry or engine, and render."""
