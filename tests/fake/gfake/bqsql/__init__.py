"""bqsql -- a small GoogleSQL subset over in-memory tables (test fixture).

Enough of BigQuery's dialect to run syncbridge's registry statements
(parameterized INSERT / UPDATE / DELETE / MERGE / SELECT) against stored
rows, with BigQuery-shaped errors ("... at [line:col]") and BigQuery's
streaming-buffer restriction on UPDATE/DELETE/MERGE.  Row sources: one
table, `UNNEST(array)` (a parameter, GENERATE_ARRAY; STRUCT elements give
one column per field), a parenthesised query in MERGE USING; queries may be
joined by UNION ALL or UNION DISTINCT.  Parameters: scalars, ARRAY and
STRUCT (nested).  No JOIN, GROUP BY, window functions, WITH, or correlated
UNNEST.

Pipeline: lexer.tokenize() -> parser.Parser (recursive descent, builds
the AST of statements.py and expressions.py) -> statement.run(ctx), which
first type-checks ("check") every expression against the table schemas and
parameters, then evaluates ("ev").  values.py holds the types, values and
errors; store.py the datasets, tables and execute().

No HTTP here; bigquery.py wraps this in REST handlers.
"""
from decimal import Decimal  # noqa: F401  (tests build NUMERIC values with bqsql.Decimal)

from .values import (BQError, SCALAR_TYPES, invalid, norm_type,  # noqa: F401
                     parse_value, format_value, ts_from_epoch)
from .lexer import tokenize  # noqa: F401
from .statements import QueryResult, Table  # noqa: F401
from .parser import Parser  # noqa: F401
from .store import BigQueryStore  # noqa: F401
