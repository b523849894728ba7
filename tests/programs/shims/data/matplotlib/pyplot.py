"""No-op pyplot: every function accepts anything; ``savefig`` writes an empty file."""


def savefig(fname, *args, **kwargs):
    with open(fname, "wb"):
        pass


def __getattr__(name):
    return lambda *args, **kwargs: None
