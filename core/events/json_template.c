/* json_template.c - JSON values whose strings are ${field} templates. */
#include "build_config.h"
#include "events/json_template.h"
#include "events/match.h"
#include "events/template.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

typedef enum { JT_LITERAL, JT_STRING, JT_FIELD, JT_OBJECT, JT_ARRAY } jt_kind;

typedef struct jt_node {
    jt_kind kind;
    char *path;          /* inside the option, for run-time errors ("jobs.copy.args[1]") */
    const json_t *lit;   /* LITERAL: borrowed from the template's source */
    sb_template *tpl;    /* STRING */
    sb_field_path field; /* FIELD: the string was exactly "${path}" */
    char *field_text;
    size_t n;
    char **keys; /* OBJECT */
    struct jt_node *kids;
} jt_node;

struct sb_json_template {
    json_t *source;
    jt_node root;
};

static int is_path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

/* "${a.b}" and nothing else: the field's JSON value, not its text. */
static int exact_field(const char *s, size_t *name_len)
{
    size_t L = strlen(s);
    if (L < 4 || s[0] != '$' || s[1] != '{' || s[L - 1] != '}')
        return 0;
    for (size_t i = 2; i < L - 1; i++)
        if (!is_path_char(s[i]))
            return 0;
    *name_len = L - 3;
    return 1;
}

static char *child_path(const char *path, const char *key)
{
    return *path ? sb_asprintf("%s.%s", path, key) : sb_strdup(key);
}

static void node_clear(jt_node *n)
{
    free(n->path);
    sb_template_free(n->tpl);
    sb_field_path_clear(&n->field);
    free(n->field_text);
    for (size_t i = 0; i < n->n; i++) {
        if (n->keys)
            free(n->keys[i]);
        node_clear(&n->kids[i]);
    }
    free(n->keys);
    free(n->kids);
}

static int compile_node(jt_node *n, const json_t *v, const char *where, const char *path, char *errstr,
                        size_t errstr_size)
{
    memset(n, 0, sizeof *n);
    n->path = sb_strdup(path);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t name_len;
        if (!strchr(s, '$')) {
            n->kind = JT_LITERAL;
            n->lit = v;
        } else if (exact_field(s, &name_len)) {
            n->kind = JT_FIELD;
            n->field_text = sb_xmalloc(name_len + 1);
            memcpy(n->field_text, s + 2, name_len);
            n->field_text[name_len] = '\0';
            sb_field_path_init(&n->field, n->field_text);
        } else {
            char msg[512];
            n->kind = JT_STRING;
            n->tpl = sb_template_compile(s, msg, sizeof msg);
            if (!n->tpl)
                return sb_err(errstr, errstr_size, "%s%s%s: %s", where, *where && *path ? "." : "", path, msg);
        }
        return 0;
    }
    if (json_is_object(v)) {
        n->kind = JT_OBJECT;
        size_t cap = json_object_size(v);
        n->keys = sb_xcalloc(cap ? cap : 1, sizeof *n->keys);
        n->kids = sb_xcalloc(cap ? cap : 1, sizeof *n->kids);
        const char *key;
        const json_t *child;
        json_object_foreach((json_t *)v, key, child) {
            char *cp = child_path(path, key);
            n->keys[n->n] = sb_strdup(key);
            int rc = compile_node(&n->kids[n->n++], child, where, cp, errstr, errstr_size);
            free(cp);
            if (rc != 0)
                return -1;
        }
        return 0;
    }
    if (json_is_array(v)) {
        n->kind = JT_ARRAY;
        size_t cap = json_array_size(v);
        n->kids = sb_xcalloc(cap ? cap : 1, sizeof *n->kids);
        for (size_t i = 0; i < cap; i++) {
            char *cp = sb_asprintf("%s[%zu]", path, i);
            int rc = compile_node(&n->kids[n->n++], json_array_get(v, i), where, cp, errstr, errstr_size);
            free(cp);
            if (rc != 0)
                return -1;
        }
        return 0;
    }
    n->kind = JT_LITERAL; /* numbers, booleans, null */
    n->lit = v;
    return 0;
}

sb_json_template *sb_json_template_compile(const json_t *v, const char *where, char *errstr, size_t errstr_size)
{
    sb_json_template *t = sb_xcalloc(1, sizeof *t);
    t->source = json_deep_copy(v);
    if (!t->source)
        abort(); /* the core's out-of-memory policy at config time */
    if (compile_node(&t->root, t->source, where ? where : "", "", errstr, errstr_size) != 0) {
        sb_json_template_free(t);
        return NULL;
    }
    return t;
}

void sb_json_template_free(sb_json_template *t)
{
    if (!t)
        return;
    node_clear(&t->root);
    json_decref(t->source);
    free(t);
}

const json_t *sb_json_template_source(const sb_json_template *t)
{
    return t ? t->source : NULL;
}

static json_t *render_node(const jt_node *n, const sb_event *ev, char *errstr, size_t errstr_size)
{
    const char *at = *n->path ? n->path : "(the value)";
    switch (n->kind) {
    case JT_LITERAL: {
        json_t *c = json_deep_copy(n->lit);
        if (!c)
            sb_err(errstr, errstr_size, "out of memory");
        return c;
    }
    case JT_FIELD: {
        json_t *v = sb_field_path_event(&n->field, ev);
        if (!v) {
            sb_err(errstr, errstr_size, "%s: event has no field \"%s\"", at, n->field_text);
            return NULL;
        }
        return json_deep_copy(v);
    }
    case JT_STRING: {
        char msg[512];
        char *s = sb_template_render(n->tpl, ev, msg, sizeof msg);
        if (!s) {
            sb_err(errstr, errstr_size, "%s: %s", at, msg);
            return NULL;
        }
        json_t *out = json_string(s);
        free(s);
        if (!out)
            sb_err(errstr, errstr_size, "%s: the rendered text is not valid UTF-8", at);
        return out;
    }
    case JT_OBJECT: {
        json_t *o = json_object();
        if (!o)
            sb_err(errstr, errstr_size, "out of memory");
        for (size_t i = 0; o && i < n->n; i++) {
            json_t *r = render_node(&n->kids[i], ev, errstr, errstr_size);
            if (!r || json_object_set_new(o, n->keys[i], r) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    case JT_ARRAY: {
        json_t *a = json_array();
        if (!a)
            sb_err(errstr, errstr_size, "out of memory");
        for (size_t i = 0; a && i < n->n; i++) {
            json_t *r = render_node(&n->kids[i], ev, errstr, errstr_size);
            if (!r || json_array_append_new(a, r) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    }
    return NULL;
}

json_t *sb_json_template_render(const sb_json_template *t, const sb_event *ev, char *errstr, size_t errstr_size)
{
    if (!t) {
        sb_err(errstr, errstr_size, "no JSON template");
        return NULL;
    }
    return render_node(&t->root, ev, errstr, errstr_size);
}
