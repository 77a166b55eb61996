"""Commands of this group (being written)."""
import click


def register(group: click.Group) -> None:
    pass
