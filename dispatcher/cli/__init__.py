"""The ``dispatcher`` command line (click); ``dispatcher.cli.main:main`` is the console-script entry point."""
