"""The command line: parse, call the library, render. The only code that prints."""
