"""Command line interface: the ``xtrieve`` click group and its commands."""
