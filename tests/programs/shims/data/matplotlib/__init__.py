"""A stand-in for matplotlib (not installed here): programs plot their results; the tests only
need the calls to succeed. ``pyplot`` records nothing and writes an empty file on savefig."""


def use(backend, *args, **kwargs):
    pass
