"""Checks of settings by type and range, each failure one line naming the key, the value and
what is expected: the training settings (`train/config.py`) and a saved model's description
(`export.py`) use them.

    RULES = {'lr': number(0, open_low=True), 'scales': sizes(), 'trunk': choice('vgg16', 'vgg-tiny')}
    check_fields({'lr': -1}, RULES, 'setting')   # ValueError: setting lr=-1: expected a number > 0
"""
import numbers


def _range(lo, hi, open_low=False, open_high=False):
    parts = []
    if lo is not None:
        parts.append(f"{'>' if open_low else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if open_high else '<='} {hi}")
    return ' and '.join(parts)


def _in(v, lo, hi, open_low, open_high):
    return ((lo is None or (v > lo if open_low else v >= lo))
            and (hi is None or (v < hi if open_high else v <= hi)))


def integer(lo=None, hi=None):
    """A whole number (not a bool) in [lo, hi]."""
    def ok(v):
        return (isinstance(v, numbers.Integral) and not isinstance(v, bool)
                and _in(v, lo, hi, False, False))
    return ok, ' '.join(['an integer', _range(lo, hi)]).strip()


def number(lo=None, hi=None, open_low=False, open_high=False):
    """A real number (an int will do, not a bool) in the range."""
    def ok(v):
        return (isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v
                and _in(v, lo, hi, open_low, open_high))
    return ok, ' '.join(['a number', _range(lo, hi, open_low, open_high)]).strip()


def choice(*values):
    return (lambda v: isinstance(v, str) and v in values), 'one of ' + ', '.join(map(repr, values))


def flag():
    return (lambda v: isinstance(v, bool)), 'true or false'


def text():
    return (lambda v: isinstance(v, str) and v != ''), 'a non-empty string'


def sizes(lo=1, what='positive integers'):
    """A non-empty list (or tuple) of whole numbers >= lo."""
    ok_item = integer(lo)[0]
    return ((lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(map(ok_item, v))),
            f'a non-empty list of {what}')


def numbers_list(lo=0, open_low=True, what='positive numbers'):
    ok_item = number(lo, open_low=open_low)[0]
    return ((lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(map(ok_item, v))),
            f'a non-empty list of {what}')


def optional(rule):
    ok, expected = rule
    return (lambda v: v is None or ok(v)), f'{expected}, or null'


def check_fields(values, rules, where='setting'):
    """Check every key of the dict `values` that `rules` (name -> (ok, expected)) knows; the first
    failure raises ValueError: "{where} {name}={value!r}: expected {expected}"."""
    for name, (ok, expected) in rules.items():
        if name in values and not ok(values[name]):
            raise ValueError(f'{where} {name}={values[name]!r}: expected {expected}')


def require(values, names, where):
    """ValueError naming the first of `names` missing from the dict `values`."""
    for name in names:
        if name not in values:
            raise ValueError(f'{where}: {name!r} is missing')
