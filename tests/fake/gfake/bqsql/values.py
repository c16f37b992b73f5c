"""Types, values and errors of the SQL engine: BigQuery's type names and
their Python representations, parsing and formatting of values (REST
strings, literals), coercion, and BQError with BigQuery's "[line:col]"
positions.
"""
import base64
import datetime as _dt
import re
from decimal import Decimal, InvalidOperation




UTC = _dt.timezone.utc
EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)

STREAMING_BUFFER_MSG = ("UPDATE or DELETE statement over table {table} would "
                        "affect rows in the streaming buffer, which is not "
                        "supported")


class BQError(Exception):
    """A BigQuery error: reason ("invalidQuery", "notFound", ...), message,
    location (ErrorProto.location, "q" for query text errors) and the HTTP
    status the REST layer should use."""

    def __init__(self, reason, message, location="q", status=400):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.location = location
        self.status = status


def _at(pos):
    return " at [%d:%d]" % pos if pos else ""


def invalid(msg, pos=None):
    return BQError("invalidQuery", msg + _at(pos))


# --------------------------------------------------------------------------
# Types and values
#
# Python representation: INT64 int, FLOAT64 float, NUMERIC Decimal, BOOL bool,
# STRING str, BYTES bytes, DATE date, DATETIME naive datetime, TIMESTAMP
# aware (UTC) datetime, NULL None.  The pseudo-type "NULL" is the type of an
# untyped NULL literal and coerces to anything.

_TYPE_ALIASES = {
    "INTEGER": "INT64", "INT": "INT64", "SMALLINT": "INT64",
    "BIGINT": "INT64", "TINYINT": "INT64", "BYTEINT": "INT64",
    "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "DECIMAL": "NUMERIC",
    "BIGNUMERIC": "NUMERIC", "BIGDECIMAL": "NUMERIC", "RECORD": "STRUCT",
}
_LEGACY_NAMES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN",
                 "STRUCT": "RECORD"}
SCALAR_TYPES = {"INT64", "FLOAT64", "NUMERIC", "BOOL", "STRING", "BYTES",
                "DATE", "DATETIME", "TIMESTAMP"}
_NUM_RANK = {"INT64": 0, "NUMERIC": 1, "FLOAT64": 2}


def norm_type(t):
    t = (t or "STRING").upper()
    return _TYPE_ALIASES.get(t, t)


def legacy_type_name(t):
    """Type name as BigQuery's REST schema spells it (INTEGER, FLOAT...)."""
    return _LEGACY_NAMES.get(t, t)


_DT_RE = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,9}))?)?)?"
    r"\s*(Z|UTC|[+-]\d{1,2}(?::?\d{2})?)?\s*$", re.I)


def _parse_dt(s, want_tz):
    m = _DT_RE.match(s)
    if not m:
        raise ValueError(s)
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    dt = _dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0),
                      int(ss or 0), micro)
    if tz and not want_tz:
        raise ValueError(s)
    if want_tz:
        off = _dt.timedelta(0)
        if tz and tz.upper() not in ("Z", "UTC"):
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            h = int(digits[:-2] if len(digits) > 2 else digits)
            m_ = int(digits[-2:]) if len(digits) > 2 else 0
            off = sign * _dt.timedelta(hours=h, minutes=m_)
        dt = (dt - off).replace(tzinfo=UTC)
    return dt


def parse_timestamp(s):
    return _parse_dt(s, True)


def parse_datetime(s):
    return _parse_dt(s, False)


def parse_date(s):
    m = re.match(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})\s*$", s)
    if not m:
        raise ValueError(s)
    return _dt.date(*map(int, m.groups()))


def ts_from_epoch(seconds):
    return EPOCH + _dt.timedelta(microseconds=round(float(seconds) * 1e6))


def parse_value(s, typ):
    """Convert the string form of a value (query parameter, CAST, string
    literal coercion) to the Python value of type typ; ValueError if bad."""
    if typ == "STRING":
        return s
    if typ == "INT64":
        t = s.strip()
        if re.fullmatch(r"[+-]?\d+", t):
            v = int(t)
        elif re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", t):
            v = int(t, 16)
        else:
            raise ValueError(s)
        if not -2**63 <= v < 2**63:
            raise ValueError(s)
        return v
    if typ == "FLOAT64":
        return float(s)
    if typ == "NUMERIC":
        try:
            v = Decimal(s.strip())
        except InvalidOperation:
            raise ValueError(s) from None
        if not v.is_finite():
            raise ValueError(s)
        return v
    if typ == "BOOL":
        low = s.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        raise ValueError(s)
    if typ == "TIMESTAMP":
        return parse_timestamp(s)
    if typ == "DATETIME":
        return parse_datetime(s)
    if typ == "DATE":
        return parse_date(s)
    if typ == "BYTES":
        return base64.b64decode(s, validate=True)
    raise ValueError(s)


def format_timestamp(v, int64=False):
    micros = (v - EPOCH) // _dt.timedelta(microseconds=1)
    if int64:
        return str(micros)
    # BigQuery's REST rows carry TIMESTAMP as epoch seconds, e.g. "1.7040672E9"
    d = (Decimal(micros).scaleb(-6)).normalize()
    return format(d, "E").replace("E+", "E")


def format_value(v, typ, int64_timestamp=False):
    """Python value -> the string BigQuery puts in {"v": ...} (None=null)."""
    if v is None:
        return None
    if typ == "BOOL":
        return "true" if v else "false"
    if typ == "FLOAT64":
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(float(v))
    if typ == "NUMERIC":
        s = format(Decimal(v), "f")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s
    if typ == "TIMESTAMP":
        return format_timestamp(v, int64_timestamp)
    if typ in ("DATETIME", "DATE"):
        return v.isoformat()
    if typ == "BYTES":
        return base64.b64encode(v).decode("ascii")
    return str(v)


def coerce_value(v, dst):
    """Runtime half of an implicit coercion the checker allowed."""
    if v is None:
        return None
    if isinstance(v, str) and dst != "STRING":
        return parse_value(v, dst)
    if dst == "FLOAT64":
        return float(v)
    if dst == "NUMERIC" and isinstance(v, int):
        return Decimal(v)
    if dst == "DATETIME" and type(v) is _dt.date:
        return _dt.datetime(v.year, v.month, v.day)
    return v
