"""``python -m xtrieve``: the command line, as the ``xtrieve`` script runs it."""
from xtrieve.cli.main import main

if __name__ == "__main__":
    main()
