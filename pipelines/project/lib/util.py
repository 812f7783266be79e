"""A helper module shipped with the project archive."""


def shout(text: str) -> str:
    return text.upper() + "!"
