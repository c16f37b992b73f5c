/*
 * bqrows.h - the rows a bigquery sink writes for an event: the `rows`
 * option's templates, the table's schema, and each rendered value typed
 * for the column it goes to (DATETIME time zone rule included), and the
 * time_zone option's zone.
 *
 * Ownership: bq_rows_* and bq_schema_* objects are owned by the caller and
 * freed with their _free function; rendered values are malloc'd strings.
 * Threading: a parsed bq_rows and bq_schema are read-only, so any thread
 * may render with them.
 */
#ifndef SB_PLUGINS_BQROWS_H
#define SB_PLUGINS_BQROWS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <syncbridge/syncbridge.h>

#include "tzif.h"

typedef struct bq_cell {
    size_t col;             /* index into bq_rows.cols */
    const sb_template *tpl; /* owned by the instance */
} bq_cell;

typedef struct bq_rowspec {
    char *name; /* "row" when the keys had no "NAME." prefix */
    bq_cell *cells;
    size_t ncells;
} bq_rowspec;

typedef struct bq_rows {
    bq_rowspec *rows;
    size_t nrows;
    char **cols; /* every column named, in config order */
    size_t ncols;
} bq_rows;

/* Read the TEMPLATE_MAP option `opt`: keys "NAME.COLUMN" (several rows per
 * event) or "COLUMN" (one row). NULL with errstr on a bad key. */
bq_rows *bq_rows_parse(const sb_instance *ins, const char *opt, char *errstr, size_t errstr_size);
void bq_rows_free(bq_rows *r);

typedef struct bq_column {
    char *name;
    char *type; /* legacy name as tables.get gives it: INTEGER, STRING, DATETIME... */
    int required;
} bq_column;

typedef struct bq_schema {
    bq_column *cols;
    size_t n;
} bq_schema;

/* From a tables.get answer. NULL with errstr when it holds no schema. */
bq_schema *bq_schema_from_table(const json_t *table, char *errstr, size_t errstr_size);
void bq_schema_free(bq_schema *s);
const bq_column *bq_schema_find(const bq_schema *s, const char *name);

/* The query parameter type for a column type ("INT64" for INTEGER...), or
 * NULL for a type rows cannot hold (RECORD, JSON, GEOGRAPHY...). */
const char *bq_param_type(const char *column_type);

/* A fixed time zone: "UTC" or a "+HH:MM"/"-HH:MM" offset. 0 with
 * *offset_s set, or -1. */
int bq_parse_zone(const char *s, int *offset_s);

/* The time_zone option: a fixed offset, or an IANA zone read from its file
 * (tzif.h). Ownership: tz belongs to the bq_zone, released by
 * bq_zone_clear. Threading: read-only once parsed, so any thread may use
 * it through bq_zone_offset and bq_type_value. */
typedef struct bq_zone {
    int fixed_s;   /* the offset when tz is NULL */
    tzif_zone *tz; /* an IANA zone, or NULL */
} bq_zone;

/* "UTC", "+HH:MM"/"-HH:MM" or a zone name such as "America/Chicago". 0, or
 * -1 with the option's config error (naming the reason) in errstr. */
int bq_zone_parse(const char *s, bq_zone *z, char *errstr, size_t errstr_size);
void bq_zone_clear(bq_zone *z);

/* The UTC offset in seconds of the zone at instant t (seconds since the epoch). */
int32_t bq_zone_offset(const bq_zone *z, int64_t t);

/* Type `text` for a column: *out is the value as BigQuery reads it in a
 * parameter or an insertAll row (malloc'd), or NULL for NULL (an empty text
 * in a column that is not STRING or BYTES). DATETIME from an instant with a
 * zone ("...Z", "+02:00") is that instant's civil time in `zone`, at the
 * offset the zone has at that instant; a DATETIME without one is kept as
 * written. 0, or -1 with the reason. */
int bq_type_value(const bq_column *col, const char *text, const bq_zone *zone, char **out, char *errstr,
                  size_t errstr_size);

#endif
