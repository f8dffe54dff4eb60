"""The exception and warning types the CLI turns into lines on stderr (an error: one line and
exit code 2; a warning: one line after a successful run). Light to import: the command line
reads them before it knows which command runs."""


class UserError(ValueError):
    """Bad input from the user: a file, column, value or option. The message names it. A
    ValueError, so that code catching bad values (``except ValueError``) catches it too."""


class DataWarning(UserWarning):
    """Rows were dropped or values adjusted; the message says how many and why."""
