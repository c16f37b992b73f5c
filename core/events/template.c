/* template.c - "${field}" templates compiled to literal/field parts. */
#include "build_config.h"
#include "events/template.h"
#include "events/event_internal.h"
#include "events/match.h"
#include "util/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct part {
    int is_field;
    char *text;         /* literal text, or the field path as written */
    sb_field_path path; /* a field's path, split once */
    char *def;          /* field default (${f:-def}); NULL = none */
} part;

struct sb_template {
    char *source;
    size_t n;
    part *parts;
};

static char *dupn(const char *s, size_t n)
{
    char *d = sb_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void add_part(sb_template *t, int is_field, const char *text, size_t len, const char *def, size_t def_len)
{
    t->parts = sb_xrealloc(t->parts, (t->n + 1) * sizeof *t->parts);
    part *p = &t->parts[t->n++];
    p->is_field = is_field;
    p->text = dupn(text, len);
    memset(&p->path, 0, sizeof p->path);
    if (is_field)
        sb_field_path_init(&p->path, p->text);
    p->def = def ? dupn(def, def_len) : NULL;
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static void fail(char *errstr, size_t errstr_size, const char *text, size_t pos, const char *problem)
{
    sb_err(errstr, errstr_size, "invalid template \"%s\": %s at column %zu", text, problem, pos + 1);
}

/* Parse "${name}" or "${name:-default}" at s[i] == '$'; sets *end past '}'. */
static int parse_field(sb_template *t, const char *s, size_t i, size_t *end, char *errstr, size_t errstr_size)
{
    size_t name_start = i + 2, j = name_start;
    for (;;) {
        size_t seg = j;
        while (is_name_char(s[j]))
            j++;
        if (j == seg) {
            if (s[j] == '\0')
                fail(errstr, errstr_size, s, i, "unterminated \"${\"");
            else if (j == name_start && s[j] == '}')
                fail(errstr, errstr_size, s, i, "empty field name");
            else
                fail(errstr, errstr_size, s, j, "expected a field name (letters, digits, \"_\", \".\")");
            return -1;
        }
        if (s[j] != '.')
            break;
        j++;
    }
    size_t name_end = j;
    const char *def = NULL;
    size_t def_len = 0;
    if (s[j] == ':' && s[j + 1] == '-') {
        def = s + j + 2;
        const char *close = strchr(def, '}');
        if (!close) {
            fail(errstr, errstr_size, s, i, "unterminated \"${\"");
            return -1;
        }
        def_len = (size_t)(close - def);
        j = (size_t)(close - s);
    } else if (s[j] == '\0') {
        fail(errstr, errstr_size, s, i, "unterminated \"${\"");
        return -1;
    } else if (s[j] != '}') {
        fail(errstr, errstr_size, s, j, "expected \"}\" or \":-default\" after the field name");
        return -1;
    }
    add_part(t, 1, s + name_start, name_end - name_start, def, def_len);
    *end = j + 1;
    return 0;
}

sb_template *sb_template_compile(const char *text, char *errstr, size_t errstr_size)
{
    if (!text)
        text = "";
    sb_template *t = sb_xcalloc(1, sizeof *t);
    t->source = sb_strdup(text);
    /* Literal runs are accumulated in `lit` because "$$" splits them. */
    size_t len = strlen(text), lit_len = 0;
    char *lit = sb_xmalloc(len + 1);
    size_t i = 0;
    while (text[i]) {
        if (text[i] != '$') {
            lit[lit_len++] = text[i++];
            continue;
        }
        if (text[i + 1] == '$') {
            lit[lit_len++] = '$';
            i += 2;
            continue;
        }
        if (text[i + 1] != '{') {
            fail(errstr, errstr_size, text, i, "\"$\" must start \"${field}\" (write \"$$\" for a literal \"$\")");
            goto error;
        }
        if (lit_len) {
            add_part(t, 0, lit, lit_len, NULL, 0);
            lit_len = 0;
        }
        if (parse_field(t, text, i, &i, errstr, errstr_size) != 0)
            goto error;
    }
    if (lit_len)
        add_part(t, 0, lit, lit_len, NULL, 0);
    free(lit);
    return t;
error:
    free(lit);
    sb_template_free(t);
    return NULL;
}

void sb_template_free(sb_template *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->parts[i].text);
        sb_field_path_clear(&t->parts[i].path);
        free(t->parts[i].def);
    }
    free(t->parts);
    free(t->source);
    free(t);
}

const char *sb_template_text(const sb_template *t)
{
    return t ? t->source : NULL;
}


char *sb_template_render(const sb_template *t, const sb_event *ev, char *errstr, size_t errstr_size)
{
    sb_strbuf b = {0};
    sb_strbuf_add(&b, "", 0);
    for (size_t i = 0; i < t->n; i++) {
        const part *p = &t->parts[i];
        if (!p->is_field) {
            sb_strbuf_add(&b, p->text, strlen(p->text));
            continue;
        }
        json_t *v = sb_field_path_event(&p->path, ev);
        if (!v) {
            if (!p->def) {
                sb_err(errstr, errstr_size, "template \"%s\": event has no field \"%s\"", t->source, p->text);
                free(b.p);
                return NULL;
            }
            sb_strbuf_add(&b, p->def, strlen(p->def));
        } else if (json_is_string(v)) {
            sb_strbuf_add(&b, json_string_value(v), json_string_length(v));
        } else {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            if (!s)
                abort();
            sb_strbuf_add(&b, s, strlen(s));
            free(s);
        }
    }
    return b.p;
}
