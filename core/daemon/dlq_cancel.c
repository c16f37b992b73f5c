/* dlq_cancel.c - `dlq drop` cancels what a dropped event may still have
 * running. The daemon already calls abandon() when it gives an event up,
 * but that cancel can fail (the service was down too), and the state that
 * names the remote work (a Dataproc operation, a multipart upload, a
 * BigQuery job) would go with the entry. So before the entries are
 * deleted, each dead entry's member states at the step it died at are
 * handed to the instance's abandon() once more, the instances built from
 * the config as preflight builds them (created, never started). */
#include "build_config.h"
#include "daemon/cli.h"
#include "daemon/cli_instances.h"
#include "engine/router.h"
#include "util/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct kept {
    int64_t entry_id;
    char *event_id;
    char *member;
    json_t *state;
    json_t *fields;
} kept;

typedef struct kept_list {
    kept *k;
    size_t n, cap;
} kept_list;

/* The states entry `id` keeps at the step it died at, if it is dead (and
 * of `route`, when given: the drop's own filter). */
static void collect_entry(sb_ledger *l, int64_t id, const char *route, kept_list *out)
{
    char err[512];
    json_t *e = sb_ledger_show(l, id, err, sizeof err);
    if (!e)
        return;
    const char *r = json_string_value(json_object_get(e, "route"));
    if (route && (!r || strcmp(r, route) != 0)) {
        json_decref(e);
        return;
    }
    const char *state = json_string_value(json_object_get(e, "state"));
    json_int_t step = json_integer_value(json_object_get(e, "next_step"));
    size_t i;
    json_t *st;
    json_array_foreach(json_object_get(e, "step_states"), i, st) {
        json_t *s = json_object_get(st, "state");
        const char *member = json_string_value(json_object_get(st, "member"));
        if (!state || strcmp(state, "dead") != 0 || json_integer_value(json_object_get(st, "step")) != step ||
            !member || !s || json_is_null(s))
            continue;
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 16;
            out->k = sb_xrealloc(out->k, out->cap * sizeof *out->k);
        }
        json_t *fields = json_object_get(e, "fields");
        out->k[out->n++] = (kept){id, sb_strdup(json_string_value(json_object_get(e, "event_id"))),
                                  sb_strdup(member), json_incref(s),
                                  json_is_object(fields) ? json_deep_copy(fields) : json_object()};
    }
    json_decref(e);
}

static sb_instance *instance_named(const sb_cli_instances *c, const char *name, const char **why)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->cfg->instances[i].name, name) == 0) {
            *why = c->errors[i];
            return c->ins[i];
        }
    *why = "it is not in the config";
    return NULL;
}

void sb_cli_dlq_cancel(const sb_cli_opts *o, sb_ledger *l, int64_t entry_id)
{
    kept_list ks = {0};
    if (entry_id) {
        collect_entry(l, entry_id, o->filter.route, &ks);
    } else {
        sb_ledger_filter f = o->filter;
        f.state = SB_ENTRY_DEAD;
        f.limit = (size_t)1 << 30;
        char err[512];
        json_t *list = sb_ledger_list(l, &f, err, sizeof err);
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e) collect_entry(l, json_integer_value(json_object_get(e, "entry_id")), NULL, &ks);
        json_decref(list);
    }
    if (ks.n == 0)
        return;
    char err[2048];
    sb_cli_instances *c = sb_cli_instances_open(o->config_path, err, sizeof err);
    if (!c)
        fprintf(stderr,
                "syncbridge: dlq drop: %zu dropped entr%s kept the state of remote work, which is not cancelled: "
                "%s (give -c with the daemon's config)\n",
                ks.n, ks.n == 1 ? "y" : "ies", err);
    for (size_t i = 0; i < ks.n; i++) {
        kept *k = &ks.k[i];
        const char *why = NULL;
        sb_instance *ins = c ? instance_named(c, k->member, &why) : NULL;
        if (c && !ins)
            fprintf(stderr, "syncbridge: dlq drop: entry %lld: instance %s: %s; what it started is not cancelled\n",
                    (long long)k->entry_id, k->member, why ? why : "it could not be built");
        if (ins && ins->plugin->abandon) {
            printf("entry %lld (%s): asking %s to clean up what it started\n", (long long)k->entry_id, k->event_id,
                   k->member);
            fflush(stdout);
            sb_event *ev = sb_event_new_with_fields(k->event_id, json_incref(k->fields));
            if (ev) {
                sb_step_abandon_offline(ins, ev, k->state);
                sb_event_free(ev);
            }
        }
        free(k->event_id);
        free(k->member);
        json_decref(k->state);
        json_decref(k->fields);
    }
    free(ks.k);
    sb_cli_instances_free(c);
}
