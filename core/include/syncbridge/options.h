/*
 * syncbridge/options.h - declarative plugin options and templates.
 *
 * A plugin declares its options as a table of sb_option_def in its
 * descriptor. The core parses the instance's JSON config against that
 * table before create(): unknown keys, wrong types, missing required
 * options and bad values are reported with the file and JSON path, and
 * defaults are applied. `syncbridge plugins NAME` prints the table.
 * Plugins never parse config themselves; they read the validated values
 * with the getters below (which never fail for a declared option).
 *
 * Value syntax in config:
 *   STRING, TEMPLATE   JSON string
 *   INT                JSON integer
 *   BOOL               true / false
 *   DOUBLE             JSON number
 *   DURATION           integer milliseconds, or a string "250ms" "5s" "2m" "1h" "1d"
 *   SIZE               integer bytes, or a string "512", "64KB", "10MB", "1GB" (powers of 1024)
 *   STRING_LIST        array of strings (a single string is taken as a list of one)
 *   OBJECT             any JSON object (e.g. string-to-string maps, pass-through properties)
 *   TEMPLATE_MAP       JSON object of name -> template string (e.g. message
 *                      attributes rendered per event); each value is a
 *                      TEMPLATE, checked when the config is loaded
 *   JSON_TEMPLATE      any JSON value (typically a request body) whose
 *                      strings are TEMPLATEs, at any depth; each is checked
 *                      when the config is loaded, and an error names its
 *                      JSON path inside the option. Since ABI 2.2
 *
 * Substitution (done by the core while loading config):
 *   In every string value, ${env:NAME} is replaced by the environment
 *   variable NAME and ${file:/path} by the file's contents (trailing
 *   newline removed), so secrets stay out of config files. In options that
 *   are not TEMPLATE, a plain ${NAME} is also an environment variable.
 *   An unset variable or unreadable file is a config error. "$${" is a
 *   literal "${".
 *   In TEMPLATE, TEMPLATE_MAP and JSON_TEMPLATE options a plain ${field} is
 *   left for run time and is replaced by the event's field (see
 *   sb_template_render); ${field:-text} gives a default when the field is
 *   absent, and "$$" is a literal "$".
 *   JSON_TEMPLATE also reads the spelling that OBJECT options needed before
 *   it existed: "$${field}" is the field too, and "$$${" a literal "${".
 *
 * Ownership: strings and objects returned by getters are owned by the
 * instance and valid until destroy(). Thread-safe (read-only after create).
 */
#ifndef SYNCBRIDGE_OPTIONS_H
#define SYNCBRIDGE_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sb_option_type {
    SB_OPT_STRING = 1,
    SB_OPT_INT,
    SB_OPT_BOOL,
    SB_OPT_DOUBLE,
    SB_OPT_DURATION, /* read as milliseconds */
    SB_OPT_SIZE,     /* read as bytes */
    SB_OPT_STRING_LIST,
    SB_OPT_OBJECT,
    SB_OPT_TEMPLATE,
    SB_OPT_TEMPLATE_MAP, /* added after 1.0: an older core refuses the table at load */
    SB_OPT_JSON_TEMPLATE /* since ABI 2.2; likewise refused by an older core */
} sb_option_type;

/* sb_option_def.flags (since ABI 2.0) */
#define SB_OPT_F_RANGE 0x1u /* INT, DURATION, SIZE, DOUBLE: the value MUST lie in [min, max] */
#define SB_OPT_F_BIND 0x2u  /* store the value in the plugin's config struct at `offset` */

typedef struct sb_option_def {
    const char *name;          /* [a-z0-9_]+; NULL terminates the table */
    sb_option_type type;
    const char *default_value; /* in config syntax as a JSON text ("10", "\"5s\"", "[\"a\"]"); NULL = none */
    int required;              /* non-zero: the option MUST be given */
    const char *description;   /* one or two sentences for `syncbridge plugins NAME` */

    /* ---- since ABI 2.0; all MAY be left zero ---- */
    uint32_t flags;            /* SB_OPT_F_* */
    /* STRING only: the allowed values, NULL-terminated. The core refuses any
     * other value with the file, the JSON path and this list, and
     * `syncbridge plugins NAME` prints it. */
    const char *const *choices;
    /* With SB_OPT_F_RANGE: inclusive bounds, in the unit the getter returns
     * (INT as is, DURATION in ms, SIZE in bytes; DOUBLE compares as double). */
    int64_t min, max;
    /* With SB_OPT_F_BIND: offsetof(the plugin's config struct, member). The
     * member's C type follows the option type:
     *   STRING                      const char *   (NULL when unset)
     *   STRING with choices         int            (index into choices; -1 unset)
     *   INT, DURATION (ms), SIZE    int64_t
     *   BOOL                        int
     *   DOUBLE                      double
     *   TEMPLATE                    const sb_template *
 *   JSON_TEMPLATE               const sb_json_template *
     *   OBJECT, TEMPLATE_MAP        const json_t *
     *   STRING_LIST                 not bindable (use the getters)
     * Pointers are owned by the instance and valid until destroy(). */
    size_t offset;
} sb_option_def;

/* Table helpers. Entries are designated initializers, so that a table
 * compiles without -Wmissing-field-initializers warnings and keeps meaning
 * the same when later ABI minors append members:
 *   SB_OPT(name, type, default, required, description)
 * gives the five classic members; the constraint helpers combine with it in
 * any order, except that SB_OPT_RANGE and SB_OPT_BIND both set .flags: for
 * both, use SB_OPT_RANGE_BIND. */
#define SB_OPT(n, t, def, req, desc) .name = (n), .type = (t), .default_value = (def), .required = (req), .description = (desc)
/* e.g.
 *   static const char *const modes[] = {"merge", "update", NULL};
 *   {SB_OPT("mode", SB_OPT_STRING, "\"merge\"", 0, "How rows are written."),
 *    SB_OPT_CHOICES(modes), SB_OPT_BIND(my_conf, mode)},
 *   {SB_OPT("batch", SB_OPT_INT, "500", 0, "Rows per request."), SB_OPT_RANGE_BIND(1, 10000, my_conf, batch)},
 *   {0}
 * <stddef.h> (offsetof) is included here. */
#define SB_OPT_CHOICES(list) .choices = (list)
#define SB_OPT_RANGE(lo, hi) .min = (lo), .max = (hi), .flags = SB_OPT_F_RANGE
#define SB_OPT_RANGE_BIND(lo, hi, type, member) \
    .min = (lo), .max = (hi), .flags = SB_OPT_F_RANGE | SB_OPT_F_BIND, .offset = offsetof(type, member)
#define SB_OPT_BIND(type, member) .flags = SB_OPT_F_BIND, .offset = offsetof(type, member)

struct sb_instance;
struct sb_event;
typedef struct sb_template sb_template;
typedef struct sb_json_template sb_json_template;

/* Getters. `name` MUST be declared in the plugin's table; an undeclared
 * name is a programming error (logged, returns the zero value). An option
 * that is neither given nor defaulted returns NULL / 0 / false; use
 * sb_opt_isset() to tell. */
int sb_opt_isset(const struct sb_instance *ins, const char *name);
const char *sb_opt_string(const struct sb_instance *ins, const char *name);
int64_t sb_opt_int(const struct sb_instance *ins, const char *name);
int sb_opt_bool(const struct sb_instance *ins, const char *name);
double sb_opt_double(const struct sb_instance *ins, const char *name);
int64_t sb_opt_duration_ms(const struct sb_instance *ins, const char *name);
int64_t sb_opt_size(const struct sb_instance *ins, const char *name);
size_t sb_opt_list_count(const struct sb_instance *ins, const char *name);
const char *sb_opt_list_item(const struct sb_instance *ins, const char *name, size_t i);
const json_t *sb_opt_object(const struct sb_instance *ins, const char *name);
const sb_template *sb_opt_template(const struct sb_instance *ins, const char *name);

/* TEMPLATE_MAP: the number of entries, and entry i's template (NULL when
 * i is out of range) with its name in *key (MAY be NULL), in config order.
 * sb_opt_object() returns the map's texts as an object. */
size_t sb_opt_template_map_count(const struct sb_instance *ins, const char *name);
const sb_template *sb_opt_template_map_item(const struct sb_instance *ins, const char *name, size_t i,
                                            const char **key);

/* Render a template against an event's fields: substitution only, never a
 * shell. String fields are inserted as is, numbers and booleans in their
 * JSON text. Returns a malloc'd string the caller frees, or NULL with a
 * message in errstr (e.g. the event has no field "table" and no default
 * was given). Thread-safe. */
char *sb_template_render(const sb_template *t, const struct sb_event *ev, char *errstr, size_t errstr_size);

/* The template's source text (for logs). */
const char *sb_template_text(const sb_template *t);

/* ---- JSON templates (SB_OPT_JSON_TEMPLATE, since ABI 2.2) ---- */

/* The option's compiled value; NULL when unset. Owned by the instance. */
const sb_json_template *sb_opt_json_template(const struct sb_instance *ins, const char *name);

/* Render against an event's fields: a copy of the value in which every
 * string is rendered as sb_template_render() does, except that a string
 * that is exactly "${field}" takes the field's JSON value (a number stays
 * a number, an object an object). Returns a new reference the caller
 * owns, or NULL with errstr naming the JSON path inside the option, e.g.
 * `jobs.copy.pysparkJob.args[1]: template "${command}": event has no field
 * "command"`. Thread-safe. */
json_t *sb_json_template_render(const sb_json_template *t, const struct sb_event *ev, char *errstr,
                                size_t errstr_size);

/* The value as configured, after ${env:...}/${file:...} substitution, with
 * its templates unrendered (for checks in create() and for logs).
 * Borrowed: valid as long as the template. */
const json_t *sb_json_template_source(const sb_json_template *t);

#ifdef __cplusplus
}
#endif
#endif
