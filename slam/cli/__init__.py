"""The ``slam`` command line: ``slam run`` and ``slam eval``.

``main`` parses arguments and turns every :class:`slam.errors.SlamError` into one
line on stderr and its exit code; each subcommand lives in its own module and
imports the heavy packages (OpenCV, evo, matplotlib) only when it runs.
"""
