"""``python -m partnerscore``: the console script ``partnerscore``, started from its own entry.

:func:`partnerscore.serving.console.main` handles SIGTERM and Ctrl-C before it imports the CLI
(standard library only here and there).
"""

import sys

from partnerscore.serving.console import main

if __name__ == "__main__":
    sys.exit(main())
