"""sfg: config-driven multi-task learning with Stochastic Filter Groups.

Importing the package (or any of its modules) changes nothing in the process: the
command-line entry points choose the environment (``sfg_app.cli.common``) and the console
(``sfg_app.cli.console``).
"""

__version__ = "0.1.0"
