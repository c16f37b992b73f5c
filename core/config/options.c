/* options.c - plugin options: validation against the declared table,
 * typed getters for plugins, and the `syncbridge plugins NAME` doc. */
#include "build_config.h"
#include "config/options_internal.h"
#include "config/confval.h"
#include "events/json_template.h"
#include "events/template.h"
#include "util/util.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct opt_val {
    char *name;
    sb_option_type type;
    int set;
    char *str;        /* STRING */
    int64_t num;      /* INT, BOOL, DURATION (ms), SIZE (bytes) */
    double dbl;       /* DOUBLE */
    size_t n_list;    /* STRING_LIST */
    char **list;
    json_t *obj;      /* OBJECT */
    sb_template *tpl; /* TEMPLATE */
    sb_json_template *jtpl; /* JSON_TEMPLATE */
    size_t n_map;     /* TEMPLATE_MAP: names, templates, and the texts in obj */
    char **keys;
    sb_template **tpls;
    int choice;       /* STRING with choices: index of the value, -1 unset */
    char *ref;        /* STRING: the text as written when substitution changed it (errors name it, not the value) */
} opt_val;

struct sb_options {
    size_t n;
    opt_val *vals;
};

const char *sb_option_type_name(sb_option_type t)
{
    switch (t) {
    case SB_OPT_STRING: return "string";
    case SB_OPT_INT: return "integer";
    case SB_OPT_BOOL: return "boolean";
    case SB_OPT_DOUBLE: return "number";
    case SB_OPT_DURATION: return "duration";
    case SB_OPT_SIZE: return "size";
    case SB_OPT_STRING_LIST: return "string list";
    case SB_OPT_OBJECT: return "object";
    case SB_OPT_TEMPLATE: return "template";
    case SB_OPT_TEMPLATE_MAP: return "template map";
    case SB_OPT_JSON_TEMPLATE: return "JSON template";
    }
    return "?";
}

static char *join_path(const char *where, const char *key)
{
    return where && *where ? sb_asprintf("%s.%s", where, key) : sb_strdup(key);
}

/* ---- parsing ------------------------------------------------------------ */

static int bad_value(const char *path, const char *expected, const json_t *v, char *errstr, size_t errstr_size)
{
    char msg[512];
    sb_config_expected(msg, sizeof msg, expected, v);
    return sb_err(errstr, errstr_size, "%s: %s", path, msg);
}

static char *subst(const char *in, int keep_fields, const char *path, char *errstr, size_t errstr_size)
{
    char msg[512];
    char *out = sb_config_subst(in, keep_fields, msg, sizeof msg);
    if (!out)
        sb_err(errstr, errstr_size, "%s: %s", path, msg);
    return out;
}

/* DURATION and SIZE: as the config loader reads them (confval.h). */
static int parse_scaled(opt_val *o, const json_t *v, const char *path, char *errstr, size_t errstr_size)
{
    char msg[1024];
    if (sb_config_scaled(v, o->type == SB_OPT_DURATION ? SB_SCALED_DURATION : SB_SCALED_SIZE, &o->num, msg,
                         sizeof msg) != 0)
        return sb_err(errstr, errstr_size, "%s: %s", path, msg);
    return 0;
}

static int parse_list(opt_val *o, const json_t *v, const char *path, char *errstr, size_t errstr_size)
{
    if (json_is_string(v)) {
        o->list = sb_xcalloc(1, sizeof *o->list);
        o->list[0] = subst(json_string_value(v), 0, path, errstr, errstr_size);
        if (!o->list[0])
            return -1;
        o->n_list = 1;
        return 0;
    }
    if (!json_is_array(v))
        return bad_value(path, "a list of strings", v, errstr, errstr_size);
    o->list = sb_xcalloc(json_array_size(v), sizeof *o->list);
    for (size_t i = 0; i < json_array_size(v); i++) {
        char *item_path = sb_asprintf("%s[%zu]", path, i);
        const json_t *item = json_array_get(v, i);
        int rc = -1;
        if (!json_is_string(item))
            bad_value(item_path, "a string", item, errstr, errstr_size);
        else if ((o->list[i] = subst(json_string_value(item), 0, item_path, errstr, errstr_size)))
            rc = 0;
        free(item_path);
        if (rc != 0)
            return -1;
        o->n_list++;
    }
    return 0;
}

/* An object of name -> template: each value substituted like a TEMPLATE
 * (fields kept for run time) and compiled now, so a bad one fails the
 * config with its path. */
static int parse_template_map(opt_val *o, const json_t *v, const char *path, char *errstr, size_t errstr_size)
{
    if (!json_is_object(v))
        return bad_value(path, "an object of templates", v, errstr, errstr_size);
    size_t n = json_object_size(v);
    o->obj = json_object();
    o->keys = sb_xcalloc(n ? n : 1, sizeof *o->keys);
    o->tpls = sb_xcalloc(n ? n : 1, sizeof *o->tpls);
    const char *key;
    const json_t *item;
    json_object_foreach((json_t *)v, key, item) {
        char *sub = join_path(path, key);
        if (!json_is_string(item)) {
            bad_value(sub, "a string (template)", item, errstr, errstr_size);
            free(sub);
            return -1;
        }
        char *text = subst(json_string_value(item), 1, sub, errstr, errstr_size);
        if (!text) {
            free(sub);
            return -1;
        }
        char msg[512];
        sb_template *t = sb_template_compile(text, msg, sizeof msg);
        if (!t) {
            sb_err(errstr, errstr_size, "%s: %s", sub, msg);
            free(text);
            free(sub);
            return -1;
        }
        json_t *js = json_string(text);
        if (!js || json_object_set_new(o->obj, key, js) != 0) {
            sb_err(errstr, errstr_size, "%s: the substituted value is not valid UTF-8 text", sub);
            sb_template_free(t);
            free(text);
            free(sub);
            return -1;
        }
        free(text);
        free(sub);
        o->keys[o->n_map] = sb_strdup(key);
        o->tpls[o->n_map] = t;
        o->n_map++;
    }
    return 0;
}

/* "$${" and "$$${" as an OBJECT option had them, where the loader read a
 * plain ${NAME} as an environment variable: "$${f}" was how a config named
 * the event field f, "$$${" a literal "${". Rewritten to template syntax
 * ("${", "$${") so that configs written then keep their meaning. */
static char *legacy_fields(const char *in)
{
    sb_strbuf b = {0};
    sb_strbuf_add(&b, "", 0);
    for (size_t i = 0; in[i];) {
        size_t k = 0;
        while (in[i + k] == '$')
            k++;
        if (k == 0) {
            sb_strbuf_add(&b, in + i, 1);
            i++;
            continue;
        }
        if (in[i + k] == '{' && k == 2)
            sb_strbuf_add(&b, "$", 1);
        else if (in[i + k] == '{' && k == 3)
            sb_strbuf_add(&b, "$$", 2);
        else
            sb_strbuf_add(&b, in + i, k);
        i += k;
    }
    return b.p;
}

/* Substitute ${env:}/${file:} in every string inside a JSON value, in
 * place. With `templates` the strings are templates: event fields are kept
 * for run time, and the legacy "$${field}" spelling is read as "${field}";
 * without, a string is a plain value. */
static int subst_tree(json_t *v, int templates, const char *path, char *errstr, size_t errstr_size)
{
    if (json_is_string(v)) {
        char *old = templates ? legacy_fields(json_string_value(v)) : NULL;
        char *s = subst(old ? old : json_string_value(v), templates, path, errstr, errstr_size);
        free(old);
        if (!s)
            return -1;
        int bad = json_string_set(v, s) != 0; /* jansson refuses text that is not UTF-8 */
        free(s);
        if (bad)
            return sb_err(errstr, errstr_size, "%s: the substituted value is not valid UTF-8 text", path);
    } else if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach(v, key, child) {
            char *sub = join_path(path, key);
            int rc = subst_tree(child, templates, sub, errstr, errstr_size);
            free(sub);
            if (rc != 0)
                return -1;
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            char *sub = sb_asprintf("%s[%zu]", path, i);
            int rc = subst_tree(json_array_get(v, i), templates, sub, errstr, errstr_size);
            free(sub);
            if (rc != 0)
                return -1;
        }
    }
    return 0;
}

static int parse_json_template(opt_val *o, const json_t *v, const char *path, char *errstr, size_t errstr_size)
{
    json_t *copy = json_deep_copy(v);
    if (!copy)
        abort();
    int rc = subst_tree(copy, 1, path, errstr, errstr_size);
    if (rc == 0) {
        o->jtpl = sb_json_template_compile(copy, path, errstr, errstr_size);
        rc = o->jtpl ? 0 : -1;
    }
    json_decref(copy);
    return rc;
}

static int parse_value(opt_val *o, const json_t *v, const char *path, char *errstr, size_t errstr_size)
{
    switch (o->type) {
    case SB_OPT_STRING:
        if (!json_is_string(v))
            return bad_value(path, "a string", v, errstr, errstr_size);
        o->str = subst(json_string_value(v), 0, path, errstr, errstr_size);
        if (o->str && strcmp(o->str, json_string_value(v)) != 0)
            o->ref = sb_strdup(json_string_value(v));
        return o->str ? 0 : -1;
    case SB_OPT_TEMPLATE: {
        if (!json_is_string(v))
            return bad_value(path, "a string (template)", v, errstr, errstr_size);
        char *text = subst(json_string_value(v), 1, path, errstr, errstr_size);
        if (!text)
            return -1;
        char msg[512];
        o->tpl = sb_template_compile(text, msg, sizeof msg);
        free(text);
        if (!o->tpl)
            return sb_err(errstr, errstr_size, "%s: %s", path, msg);
        return 0;
    }
    case SB_OPT_INT:
        if (!json_is_integer(v))
            return bad_value(path, "an integer", v, errstr, errstr_size);
        o->num = json_integer_value(v);
        return 0;
    case SB_OPT_BOOL:
        if (!json_is_boolean(v))
            return bad_value(path, "true or false", v, errstr, errstr_size);
        o->num = json_is_true(v);
        return 0;
    case SB_OPT_DOUBLE:
        if (!json_is_number(v))
            return bad_value(path, "a number", v, errstr, errstr_size);
        o->dbl = json_number_value(v);
        return 0;
    case SB_OPT_DURATION:
    case SB_OPT_SIZE:
        return parse_scaled(o, v, path, errstr, errstr_size);
    case SB_OPT_STRING_LIST:
        return parse_list(o, v, path, errstr, errstr_size);
    case SB_OPT_OBJECT:
        if (!json_is_object(v))
            return bad_value(path, "an object", v, errstr, errstr_size);
        o->obj = json_deep_copy(v);
        return subst_tree(o->obj, 0, path, errstr, errstr_size);
    case SB_OPT_TEMPLATE_MAP:
        return parse_template_map(o, v, path, errstr, errstr_size);
    case SB_OPT_JSON_TEMPLATE:
        return parse_json_template(o, v, path, errstr, errstr_size);
    }
    return sb_err(errstr, errstr_size, "%s: option has an unknown type %d in the plugin's table", path, (int)o->type);
}

/* ---- constraints: choices and ranges --------------------------------------- */

/* A bound in the option's own unit, as a user would write it ("90s", "64MB"). */
static void format_bound(char *buf, size_t sz, sb_option_type t, int64_t v)
{
    static const struct { int64_t div; const char *unit; } dur[] = {
        {86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
    static const struct { int64_t div; const char *unit; } size[] = {
        {1024LL * 1024 * 1024, "GB"}, {1024 * 1024, "MB"}, {1024, "KB"}, {1, ""}};
    if (t == SB_OPT_DURATION) {
        for (size_t i = 0; i < sizeof dur / sizeof dur[0]; i++)
            if (v != 0 && v % dur[i].div == 0) {
                snprintf(buf, sz, "%lld%s", (long long)(v / dur[i].div), dur[i].unit);
                return;
            }
    } else if (t == SB_OPT_SIZE) {
        for (size_t i = 0; i < sizeof size / sizeof size[0]; i++)
            if (v != 0 && v % size[i].div == 0) {
                snprintf(buf, sz, "%lld%s", (long long)(v / size[i].div), size[i].unit);
                return;
            }
    }
    snprintf(buf, sz, "%lld", (long long)v);
}

static char *choices_list(const char *const *choices)
{
    sb_strbuf b = {0};
    for (size_t i = 0; choices[i]; i++) {
        if (i)
            sb_strbuf_add(&b, ", ", 2);
        sb_strbuf_add(&b, "\"", 1);
        sb_strbuf_add(&b, choices[i], strlen(choices[i]));
        sb_strbuf_add(&b, "\"", 1);
    }
    return b.p ? b.p : sb_strdup("");
}

static int check_constraints(const sb_option_def *d, opt_val *o, const char *path, char *errstr, size_t errstr_size)
{
    if (d->choices && d->type == SB_OPT_STRING) {
        size_t n = 0;
        while (d->choices[n])
            n++;
        for (size_t i = 0; i < n; i++)
            if (strcmp(o->str, d->choices[i]) == 0) {
                o->choice = (int)i;
                return 0;
            }
        char *list = choices_list(d->choices);
        if (o->ref) { /* a substituted value may be a secret: name its reference only */
            sb_err(errstr, errstr_size, "%s: the value substituted for \"%s\" (not shown) is not one of the allowed "
                   "values: %s", path, o->ref, list);
            free(list);
            return -1;
        }
        const char *close = sb_closest_name(o->str, (const char *const *)d->choices, n);
        char hint[300] = "";
        if (close)
            snprintf(hint, sizeof hint, " (did you mean \"%s\"?)", close);
        sb_err(errstr, errstr_size, "%s: \"%s\" is not one of the allowed values: %s%s", path, o->str, list, hint);
        free(list);
        return -1;
    }
    if (!(d->flags & SB_OPT_F_RANGE))
        return 0;
    char lo[48], hi[48], got[48];
    format_bound(lo, sizeof lo, d->type, d->min);
    format_bound(hi, sizeof hi, d->type, d->max);
    if (d->type == SB_OPT_DOUBLE) {
        if (o->dbl >= (double)d->min && o->dbl <= (double)d->max)
            return 0;
        return sb_err(errstr, errstr_size, "%s: %g is outside the allowed range %s to %s", path, o->dbl, lo, hi);
    }
    if (o->num >= d->min && o->num <= d->max)
        return 0;
    format_bound(got, sizeof got, d->type, o->num);
    return sb_err(errstr, errstr_size, "%s: %s is outside the allowed range %s to %s", path, got, lo, hi);
}

/* A table the core cannot honour is the plugin's bug: refused at load with
 * the option's name, so it never reaches a user's config. */
int sb_options_check_table(const sb_option_def *defs, size_t config_size, char *errstr, size_t errstr_size)
{
    for (size_t i = 0; defs && defs[i].name; i++) {
        const sb_option_def *d = &defs[i];
        int numeric = d->type == SB_OPT_INT || d->type == SB_OPT_DURATION || d->type == SB_OPT_SIZE ||
                      d->type == SB_OPT_DOUBLE;
        if (d->choices && d->type != SB_OPT_STRING)
            return sb_err(errstr, errstr_size, "option %s: choices are only for string options", d->name);
        if (d->choices && !d->choices[0])
            return sb_err(errstr, errstr_size, "option %s: the list of choices is empty", d->name);
        if ((d->flags & SB_OPT_F_RANGE) && !numeric)
            return sb_err(errstr, errstr_size, "option %s: a range is only for integer, number, duration or size options",
                          d->name);
        if ((d->flags & SB_OPT_F_RANGE) && d->min > d->max)
            return sb_err(errstr, errstr_size, "option %s: its range is empty (min %lld > max %lld)", d->name,
                          (long long)d->min, (long long)d->max);
        if (d->flags & SB_OPT_F_BIND) {
            size_t width = 0;
            switch (d->type) {
            case SB_OPT_STRING: width = d->choices ? sizeof(int) : sizeof(char *); break;
            case SB_OPT_INT:
            case SB_OPT_DURATION:
            case SB_OPT_SIZE: width = sizeof(int64_t); break;
            case SB_OPT_BOOL: width = sizeof(int); break;
            case SB_OPT_DOUBLE: width = sizeof(double); break;
            case SB_OPT_TEMPLATE:
            case SB_OPT_OBJECT:
            case SB_OPT_TEMPLATE_MAP:
            case SB_OPT_JSON_TEMPLATE: width = sizeof(void *); break;
            case SB_OPT_STRING_LIST: break;
            }
            if (!width)
                return sb_err(errstr, errstr_size, "option %s: a string list cannot be bound to the config struct",
                              d->name);
            if (d->offset + width > config_size)
                return sb_err(errstr, errstr_size,
                              "option %s: bound at offset %zu, past the end of the plugin's config struct (%zu bytes)",
                              d->name, d->offset, config_size);
        }
    }
    return 0;
}

void sb_options_bind(const sb_options *o, const sb_option_def *defs, void *conf)
{
    for (size_t i = 0; conf && i < o->n; i++) {
        const sb_option_def *d = &defs[i];
        const opt_val *v = &o->vals[i];
        if (!(d->flags & SB_OPT_F_BIND))
            continue;
        char *at = (char *)conf + d->offset;
        switch (d->type) {
        case SB_OPT_STRING:
            if (d->choices) {
                int idx = v->set ? v->choice : -1;
                memcpy(at, &idx, sizeof idx);
            } else {
                const char *str = v->set ? v->str : NULL;
                memcpy(at, &str, sizeof str);
            }
            break;
        case SB_OPT_INT:
        case SB_OPT_DURATION:
        case SB_OPT_SIZE: memcpy(at, &v->num, sizeof v->num); break;
        case SB_OPT_BOOL: {
            int b = (int)v->num;
            memcpy(at, &b, sizeof b);
            break;
        }
        case SB_OPT_DOUBLE: memcpy(at, &v->dbl, sizeof v->dbl); break;
        case SB_OPT_TEMPLATE: {
            const sb_template *t = v->tpl;
            memcpy(at, &t, sizeof t);
            break;
        }
        case SB_OPT_OBJECT:
        case SB_OPT_TEMPLATE_MAP: {
            const json_t *j = v->obj;
            memcpy(at, &j, sizeof j);
            break;
        }
        case SB_OPT_JSON_TEMPLATE: {
            const sb_json_template *t = v->jtpl;
            memcpy(at, &t, sizeof t);
            break;
        }
        case SB_OPT_STRING_LIST: break;
        }
    }
}

static size_t count_defs(const sb_option_def *defs)
{
    size_t n = 0;
    while (defs && defs[n].name)
        n++;
    return n;
}

static int unknown_key(const sb_option_def *defs, size_t n, const char *key, const char *where, char *errstr,
                       size_t errstr_size)
{
    char *path = join_path(where, key);
    if (n == 0) {
        sb_err(errstr, errstr_size, "%s: unknown option (this plugin takes no options)", path);
        free(path);
        return -1;
    }
    const char **names = sb_xcalloc(n, sizeof *names);
    for (size_t i = 0; i < n; i++)
        names[i] = defs[i].name;
    const char *close = sb_closest_name(key, names, n);
    if (close) {
        sb_err(errstr, errstr_size, "%s: unknown option (did you mean \"%s\"?)", path, close);
    } else {
        size_t len = 0;
        for (size_t i = 0; i < n; i++)
            len += strlen(names[i]) + 2;
        char *list = sb_xcalloc(len + 1, 1);
        for (size_t i = 0; i < n; i++) {
            if (i)
                strcat(list, ", ");
            strcat(list, names[i]);
        }
        sb_err(errstr, errstr_size, "%s: unknown option (known: %s)", path, list);
        free(list);
    }
    free(names);
    free(path);
    return -1;
}

sb_options *sb_options_parse(const sb_option_def *defs, const json_t *given, const char *where, char *errstr,
                             size_t errstr_size)
{
    if (given && !json_is_object(given)) {
        bad_value(where && *where ? where : "options", "an object of options", given, errstr, errstr_size);
        return NULL;
    }
    size_t n = count_defs(defs);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)given, key, v) {
        size_t i = 0;
        while (i < n && strcmp(defs[i].name, key) != 0)
            i++;
        if (i == n) {
            unknown_key(defs, n, key, where, errstr, errstr_size);
            return NULL;
        }
    }

    sb_options *o = sb_xcalloc(1, sizeof *o);
    o->vals = sb_xcalloc(n, sizeof *o->vals);
    o->n = n;
    for (size_t i = 0; i < n; i++) {
        const sb_option_def *d = &defs[i];
        opt_val *val = &o->vals[i];
        val->name = sb_strdup(d->name);
        val->type = d->type;
        val->choice = -1;
        char *path = join_path(where, d->name);
        json_t *def_json = NULL;
        int rc = 0;
        v = json_object_get(given, d->name);
        if (!v && d->default_value) {
            json_error_t jerr;
            def_json = json_loads(d->default_value, JSON_DECODE_ANY, &jerr);
            if (!def_json)
                rc = sb_err(errstr, errstr_size, "%s: the plugin's default %s is not valid JSON: %s", path,
                            d->default_value, jerr.text);
            v = def_json;
        }
        if (rc == 0 && !v && d->required)
            rc = sb_err(errstr, errstr_size, "%s: missing required option (%s)", path, sb_option_type_name(d->type));
        if (rc == 0 && v) {
            rc = parse_value(val, v, path, errstr, errstr_size);
            if (rc == 0)
                rc = check_constraints(d, val, path, errstr, errstr_size);
            val->set = rc == 0;
        }
        json_decref(def_json);
        free(path);
        if (rc != 0) {
            sb_options_free(o);
            return NULL;
        }
    }
    return o;
}

void sb_options_free(sb_options *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->n; i++) {
        opt_val *v = &o->vals[i];
        free(v->name);
        free(v->str);
        free(v->ref);
        for (size_t j = 0; j < v->n_list; j++)
            free(v->list[j]);
        free(v->list);
        for (size_t j = 0; j < v->n_map; j++) {
            free(v->keys[j]);
            sb_template_free(v->tpls[j]);
        }
        free(v->keys);
        free(v->tpls);
        json_decref(v->obj);
        sb_template_free(v->tpl);
        sb_json_template_free(v->jtpl);
    }
    free(o->vals);
    free(o);
}

/* ---- getters ------------------------------------------------------------- */

static _Atomic(sb_options_lookup_fn) g_lookup;

void sb_options_set_lookup(sb_options_lookup_fn fn)
{
    atomic_store(&g_lookup, fn);
}

/* `a`/`b`: the option types the getter reads. A miss is a bug in the
 * plugin, so it is logged rather than returned. */
static const opt_val *lookup(const sb_instance *ins, const char *name, const char *getter, sb_option_type a,
                             sb_option_type b)
{
    sb_options_lookup_fn options_of = atomic_load(&g_lookup);
    const sb_options *o = ins && options_of ? options_of(ins) : NULL;
    for (size_t i = 0; o && name && i < o->n; i++) {
        const opt_val *v = &o->vals[i];
        if (strcmp(v->name, name) != 0)
            continue;
        if (a && v->type != a && v->type != b) {
            sb_log(ins, SB_LOG_ERROR, "%s(\"%s\"): the option is declared as a %s", getter, name,
                   sb_option_type_name(v->type));
            return NULL;
        }
        return v;
    }
    sb_log(ins, SB_LOG_ERROR, "%s(\"%s\"): no such option in the plugin's table", getter, name ? name : "(null)");
    return NULL;
}

int sb_opt_isset(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_isset", 0, 0);
    return v && v->set;
}

const char *sb_opt_string(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_string", SB_OPT_STRING, SB_OPT_TEMPLATE);
    if (!v)
        return NULL;
    return v->type == SB_OPT_TEMPLATE ? sb_template_text(v->tpl) : v->str;
}

int64_t sb_opt_int(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_int", SB_OPT_INT, SB_OPT_INT);
    return v ? v->num : 0;
}

int sb_opt_bool(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_bool", SB_OPT_BOOL, SB_OPT_BOOL);
    return v ? (int)v->num : 0;
}

double sb_opt_double(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_double", SB_OPT_DOUBLE, SB_OPT_DOUBLE);
    return v ? v->dbl : 0.0;
}

int64_t sb_opt_duration_ms(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_duration_ms", SB_OPT_DURATION, SB_OPT_DURATION);
    return v ? v->num : 0;
}

int64_t sb_opt_size(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_size", SB_OPT_SIZE, SB_OPT_SIZE);
    return v ? v->num : 0;
}

size_t sb_opt_list_count(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_list_count", SB_OPT_STRING_LIST, SB_OPT_STRING_LIST);
    return v ? v->n_list : 0;
}

const char *sb_opt_list_item(const sb_instance *ins, const char *name, size_t i)
{
    const opt_val *v = lookup(ins, name, "sb_opt_list_item", SB_OPT_STRING_LIST, SB_OPT_STRING_LIST);
    return v && i < v->n_list ? v->list[i] : NULL;
}

const json_t *sb_opt_object(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_object", SB_OPT_OBJECT, SB_OPT_TEMPLATE_MAP);
    return v ? v->obj : NULL;
}

const sb_template *sb_opt_template(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_template", SB_OPT_TEMPLATE, SB_OPT_TEMPLATE);
    return v ? v->tpl : NULL;
}

size_t sb_opt_template_map_count(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_template_map_count", SB_OPT_TEMPLATE_MAP, SB_OPT_TEMPLATE_MAP);
    return v ? v->n_map : 0;
}

const sb_template *sb_opt_template_map_item(const sb_instance *ins, const char *name, size_t i, const char **key)
{
    const opt_val *v = lookup(ins, name, "sb_opt_template_map_item", SB_OPT_TEMPLATE_MAP, SB_OPT_TEMPLATE_MAP);
    if (!v || i >= v->n_map)
        return NULL;
    if (key)
        *key = v->keys[i];
    return v->tpls[i];
}

/* ---- documentation ------------------------------------------------------- */

#define DOC_WIDTH 78

/* Print `text` word-wrapped into `width` columns; continuation lines are
 * indented by `indent`. The first line is assumed already indented. */
static void print_wrapped(FILE *out, const char *text, size_t indent, size_t width)
{
    size_t col = 0;
    const char *p = text ? text : "";
    while (*p) {
        while (*p == ' ')
            p++;
        size_t wlen = strcspn(p, " ");
        if (wlen == 0)
            break;
        if (col > 0 && col + 1 + wlen > width) {
            fprintf(out, "\n%*s", (int)indent, "");
            col = 0;
        } else if (col > 0) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, wlen, out);
        col += wlen;
        p += wlen;
    }
    fputc('\n', out);
}

static const char *kind_name(sb_plugin_kind k)
{
    switch (k) {
    case SB_KIND_SOURCE: return "source";
    case SB_KIND_SINK: return "sink";
    case SB_KIND_ACTION: return "action";
    }
    return "?";
}

void sb_options_print_doc(FILE *out, const sb_plugin *p)
{
    fprintf(out, "%s (%s plugin, version %s)\n  ", p->name, kind_name(p->kind), p->version ? p->version : "?");
    print_wrapped(out, p->description, 2, DOC_WIDTH - 2);
    size_t n = count_defs(p->options);
    if (n == 0) {
        fputs("\nOptions: none.\n", out);
        return;
    }
    size_t wname = strlen("OPTION"), wtype = strlen("TYPE"), wdef = strlen("DEFAULT");
    for (size_t i = 0; i < n; i++) {
        const sb_option_def *d = &p->options[i];
        const char *def = d->required ? "required" : d->default_value ? d->default_value : "-";
        size_t l = strlen(d->name);
        wname = l > wname ? l : wname;
        l = strlen(sb_option_type_name(d->type));
        wtype = l > wtype ? l : wtype;
        l = strlen(def);
        /* a long default would squeeze the descriptions: it gets its own line */
        if (l <= 20 && l > wdef)
            wdef = l;
    }
    size_t desc_col = 2 + wname + 2 + wtype + 2 + wdef + 2;
    size_t desc_width = DOC_WIDTH > desc_col + 30 ? DOC_WIDTH - desc_col : 30;
    fprintf(out, "\nOptions:\n  %-*s  %-*s  %-*s  %s\n", (int)wname, "OPTION", (int)wtype, "TYPE", (int)wdef,
            "DEFAULT", "DESCRIPTION");
    for (size_t i = 0; i < n; i++) {
        const sb_option_def *d = &p->options[i];
        const char *def = d->required ? "required" : d->default_value ? d->default_value : "-";
        fprintf(out, "  %-*s  %-*s  ", (int)wname, d->name, (int)wtype, sb_option_type_name(d->type));
        if (strlen(def) > wdef)
            fprintf(out, "%s\n%*s", def, (int)desc_col, "");
        else
            fprintf(out, "%-*s  ", (int)wdef, def);
        print_wrapped(out, d->description, desc_col, desc_width);
        if (d->choices && d->type == SB_OPT_STRING) {
            char *list = choices_list(d->choices);
            char *line = sb_asprintf("One of: %s.", list);
            fprintf(out, "%*s", (int)desc_col, "");
            print_wrapped(out, line, desc_col, desc_width);
            free(line);
            free(list);
        }
        if (d->flags & SB_OPT_F_RANGE) {
            char lo[48], hi[48];
            format_bound(lo, sizeof lo, d->type, d->min);
            format_bound(hi, sizeof hi, d->type, d->max);
            fprintf(out, "%*sFrom %s to %s.\n", (int)desc_col, "", lo, hi);
        }
    }
}

const sb_json_template *sb_opt_json_template(const sb_instance *ins, const char *name)
{
    const opt_val *v = lookup(ins, name, "sb_opt_json_template", SB_OPT_JSON_TEMPLATE, SB_OPT_JSON_TEMPLATE);
    return v ? v->jtpl : NULL;
}
