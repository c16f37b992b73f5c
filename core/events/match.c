/* match.c - compile and evaluate route match conditions. */
#include "build_config.h"
#include "events/match.h"
#include "events/event_internal.h"
#include "util/util.h"

#include <fnmatch.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

typedef enum op {
    OP_EQUALS,
    OP_IN,
    OP_GLOB,
    OP_REGEX,
    OP_EXISTS,
    OP_ALL,
    OP_ANY,
    OP_NOT
} op;

struct sb_match {
    op op;
    sb_field_path path; /* leaves: the field, split once */
    json_t *value;  /* equals: the value; in: the array */
    char *glob;
    regex_t re;
    int exists;
    size_t n;
    sb_match **kids; /* all/any: n children; not: one */
};

static const char *const leaf_ops[] = {"equals", "in", "glob", "regex", "exists"};
static const char *const group_ops[] = {"all", "any", "not"};

void sb_field_path_init(sb_field_path *p, const char *path)
{
    p->buf = sb_strdup(path);
    if (!strchr(path, '.')) {
        p->n = 1;
        p->seg = sb_xcalloc(1, sizeof *p->seg);
        p->seg[0] = p->buf;
        return;
    }
    size_t dots = 0;
    for (const char *c = path; *c; c++)
        dots += *c == '.';
    p->seg = sb_xcalloc(dots + 1, sizeof *p->seg);
    p->n = 0;
    char *save = NULL;
    for (char *seg = strtok_r(p->buf, ".", &save); seg; seg = strtok_r(NULL, ".", &save))
        p->seg[p->n++] = seg;
}

void sb_field_path_clear(sb_field_path *p)
{
    free(p->seg);
    free(p->buf);
    memset(p, 0, sizeof *p);
}

/* Down from v through the path's segments [from, n). */
static json_t *descend(const sb_field_path *p, size_t from, json_t *v)
{
    for (size_t i = from; i < p->n && v; i++)
        v = json_is_object(v) ? json_object_get(v, p->seg[i]) : NULL;
    return v;
}

json_t *sb_field_path_get(const sb_field_path *p, json_t *obj)
{
    return descend(p, 0, obj);
}

json_t *sb_json_path(json_t *obj, const char *path)
{
    if (!obj || !path)
        return NULL;
    sb_field_path p;
    sb_field_path_init(&p, path);
    json_t *v = sb_field_path_get(&p, obj);
    sb_field_path_clear(&p);
    return v;
}

json_t *sb_field_path_event(const sb_field_path *p, const sb_event *ev)
{
    if (!ev)
        return NULL;
    if (p->n == 0)
        return sb_event_view(ev);
    return descend(p, 1, sb_event_member(ev, p->seg[0]));
}

void sb_match_free(sb_match *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        sb_match_free(m->kids[i]);
    free(m->kids);
    if (m->op == OP_REGEX)
        regfree(&m->re);
    sb_field_path_clear(&m->path);
    free(m->glob);
    json_decref(m->value);
    free(m);
}

static int is_one_of(const char *key, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, names[i]) == 0)
            return 1;
    return 0;
}

static sb_match *compile(const json_t *spec, const char *where, char *errstr, size_t errstr_size);

static sb_match *compile_group(const json_t *spec, const char *key, const char *where, char *errstr,
                               size_t errstr_size)
{
    const json_t *v = json_object_get(spec, key);
    sb_match *m = sb_xcalloc(1, sizeof *m);
    char *sub;
    if (strcmp(key, "not") == 0) {
        m->op = OP_NOT;
        m->n = 1;
        m->kids = sb_xcalloc(1, sizeof *m->kids);
        sub = sb_asprintf("%s.not", where);
        m->kids[0] = compile(v, sub, errstr, errstr_size);
        free(sub);
        if (!m->kids[0])
            goto fail;
        return m;
    }
    m->op = strcmp(key, "all") == 0 ? OP_ALL : OP_ANY;
    if (!json_is_array(v) || json_array_size(v) == 0) {
        sb_err(errstr, errstr_size, "%s.%s: expected a non-empty list of conditions", where, key);
        goto fail;
    }
    m->kids = sb_xcalloc(json_array_size(v), sizeof *m->kids);
    for (size_t i = 0; i < json_array_size(v); i++) {
        sub = sb_asprintf("%s.%s[%zu]", where, key, i);
        m->kids[i] = compile(json_array_get(v, i), sub, errstr, errstr_size);
        free(sub);
        if (!m->kids[i])
            goto fail;
        m->n++;
    }
    return m;
fail:
    sb_match_free(m);
    return NULL;
}

static sb_match *compile_leaf(const json_t *spec, const char *key, const char *where, char *errstr,
                              size_t errstr_size)
{
    const json_t *field = json_object_get(spec, "field");
    const json_t *v = json_object_get(spec, key);
    if (!field) {
        sb_err(errstr, errstr_size, "%s: \"%s\" needs a \"field\"", where, key);
        return NULL;
    }
    if (!json_is_string(field) || json_string_length(field) == 0) {
        sb_err(errstr, errstr_size, "%s.field: expected a non-empty string (a field path like \"a.b\")", where);
        return NULL;
    }
    sb_match *m = sb_xcalloc(1, sizeof *m);
    sb_field_path_init(&m->path, json_string_value(field));
    if (strcmp(key, "equals") == 0) {
        m->op = OP_EQUALS;
        m->value = json_deep_copy(v);
    } else if (strcmp(key, "in") == 0) {
        m->op = OP_IN;
        if (!json_is_array(v)) {
            sb_err(errstr, errstr_size, "%s.in: expected a list of values", where);
            goto fail;
        }
        m->value = json_deep_copy(v);
    } else if (strcmp(key, "glob") == 0) {
        m->op = OP_GLOB;
        if (!json_is_string(v)) {
            sb_err(errstr, errstr_size, "%s.glob: expected a string pattern", where);
            goto fail;
        }
        m->glob = sb_strdup(json_string_value(v));
    } else if (strcmp(key, "regex") == 0) {
        if (!json_is_string(v)) {
            sb_err(errstr, errstr_size, "%s.regex: expected a string", where);
            goto fail;
        }
        int rc = regcomp(&m->re, json_string_value(v), REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char buf[256];
            regerror(rc, &m->re, buf, sizeof buf);
            sb_err(errstr, errstr_size, "%s.regex: invalid regular expression: %s", where, buf);
            goto fail;
        }
        m->op = OP_REGEX;
    } else {
        m->op = OP_EXISTS;
        if (!json_is_boolean(v)) {
            sb_err(errstr, errstr_size, "%s.exists: expected true or false", where);
            goto fail;
        }
        m->exists = json_is_true(v);
    }
    return m;
fail:
    sb_match_free(m);
    return NULL;
}

static sb_match *compile(const json_t *spec, const char *where, char *errstr, size_t errstr_size)
{
    if (!json_is_object(spec)) {
        sb_err(errstr, errstr_size, "%s: expected a condition object", where);
        return NULL;
    }
    const char *key, *op_key = NULL;
    const json_t *v;
    int has_field = 0;
    json_object_foreach((json_t *)spec, key, v) {
        if (strcmp(key, "field") == 0) {
            has_field = 1;
            continue;
        }
        if (!is_one_of(key, leaf_ops, 5) && !is_one_of(key, group_ops, 3)) {
            sb_err(errstr, errstr_size,
                   "%s.%s: unknown key in match condition (expected field with one of equals, in, glob, "
                   "regex, exists; or one of all, any, not)",
                   where, key);
            return NULL;
        }
        if (op_key) {
            sb_err(errstr, errstr_size, "%s: \"%s\" and \"%s\" in one condition; combine them with \"all\"",
                   where, op_key, key);
            return NULL;
        }
        op_key = key;
    }
    if (!op_key) {
        sb_err(errstr, errstr_size, "%s: condition has no test (one of equals, in, glob, regex, exists, all, any, not)",
               where);
        return NULL;
    }
    if (is_one_of(op_key, group_ops, 3)) {
        if (has_field) {
            sb_err(errstr, errstr_size, "%s.field: not allowed with \"%s\"", where, op_key);
            return NULL;
        }
        return compile_group(spec, op_key, where, errstr, errstr_size);
    }
    return compile_leaf(spec, op_key, where, errstr, errstr_size);
}

sb_match *sb_match_compile(const json_t *spec, const char *where, char *errstr, size_t errstr_size)
{
    return compile(spec, where ? where : "match", errstr, errstr_size);
}

/* Numbers compare by value whatever their JSON representation (5 == 5.0);
 * everything else must agree in type. */
static int values_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    return json_equal((json_t *)a, (json_t *)b);
}

static int eval(const sb_match *m, const sb_event *ev)
{
    switch (m->op) {
    case OP_ALL:
        for (size_t i = 0; i < m->n; i++)
            if (!eval(m->kids[i], ev))
                return 0;
        return 1;
    case OP_ANY:
        for (size_t i = 0; i < m->n; i++)
            if (eval(m->kids[i], ev))
                return 1;
        return 0;
    case OP_NOT:
        return !eval(m->kids[0], ev);
    default:
        break;
    }
    const json_t *v = sb_field_path_event(&m->path, ev);
    if (m->op == OP_EXISTS)
        return (v != NULL) == m->exists;
    if (!v)
        return 0;
    switch (m->op) {
    case OP_EQUALS:
        return values_equal(v, m->value);
    case OP_IN:
        for (size_t i = 0; i < json_array_size(m->value); i++)
            if (values_equal(v, json_array_get(m->value, i)))
                return 1;
        return 0;
    case OP_GLOB:
        return json_is_string(v) && fnmatch(m->glob, json_string_value(v), 0) == 0;
    case OP_REGEX:
        return json_is_string(v) && regexec(&m->re, json_string_value(v), 0, NULL, 0) == 0;
    default:
        return 0;
    }
}

int sb_match_eval(const sb_match *m, const sb_event *ev)
{
    if (!m)
        return 1;
    return eval(m, ev);
}
