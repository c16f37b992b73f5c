/* test_event.c - the event model: the ledger payload round trip, and the
 * raw-text shortcut for JSON sources staying equal to a fresh dump. */
#include "build_config.h"
#include "events/event_blocks.h"
#include "events/event_internal.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* payload -> event -> fields equal `want` (a JSON object text) */
static void assert_fields(sb_event *ev, const char *want)
{
    char *payload = sb_event_to_payload(ev, NULL);
    ck_assert_ptr_nonnull(payload);
    char err[256];
    sb_event *back = sb_event_from_payload(payload, err, sizeof err);
    ck_assert_msg(back != NULL, "%s: %s", payload, err);
    json_t *w = json_loads(want, 0, NULL);
    ck_assert_msg(json_equal(sb_event_fields(back), w), "payload %s, want %s", payload, want);
    ck_assert_str_eq(sb_event_id(back), sb_event_id(ev));
    json_decref(w);
    sb_event_free(back);
    free(payload);
}

START_TEST(raw_text_is_kept_and_setters_are_spliced)
{
    char err[256];
    const char *text = "  {\"event_id\": \"e1\", \"table\": \"t\", \"n\": 5}  ";
    sb_event *ev = sb_event_new_json("fallback", "event_id", text, strlen(text), err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    ck_assert_str_eq(sb_event_id(ev), "e1");
    ck_assert_ptr_nonnull(ev->raw);
    assert_fields(ev, "{\"event_id\": \"e1\", \"table\": \"t\", \"n\": 5}");
    sb_event_set_string(ev, "kafka_topic", "rr");
    sb_event_set_int(ev, "n", 6); /* replaces a raw member: the later key wins */
    ck_assert_ptr_nonnull(ev->raw);
    assert_fields(ev, "{\"event_id\": \"e1\", \"table\": \"t\", \"n\": 6, \"kafka_topic\": \"rr\"}");
    sb_event_fields(ev); /* mutable access: the raw text can no longer be trusted */
    ck_assert_ptr_null(ev->raw);
    assert_fields(ev, "{\"event_id\": \"e1\", \"table\": \"t\", \"n\": 6, \"kafka_topic\": \"rr\"}");
    sb_event_free(ev);
}
END_TEST

START_TEST(empty_object_and_bad_text)
{
    char err[256];
    sb_event *ev = sb_event_new_json("id-1", NULL, "{ }", 3, err, sizeof err);
    ck_assert_ptr_nonnull(ev);
    sb_event_set_int(ev, "a", 1);
    assert_fields(ev, "{\"a\": 1}");
    sb_event_free(ev);
    ck_assert_ptr_null(sb_event_new_json("id-2", NULL, "[1,2]", 5, err, sizeof err));
    ck_assert_str_eq(err, "not a JSON object");
    ck_assert_ptr_null(sb_event_new_json("id-3", NULL, "{\"a\":", 5, err, sizeof err));
    ck_assert_msg(strstr(err, "column"), "%s", err);
}
END_TEST

/* A JSON event stays text until a field is read; reading keeps the text,
 * a clone copies only the text, and both views always agree. */
START_TEST(fields_are_built_on_first_read)
{
    char err[256];
    const char *text = "{\"id\":\"k1\",\"table\":\"orders\",\"n\":1}";
    sb_event *ev = sb_event_new_json("fb", "id", text, strlen(text), err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    ck_assert_str_eq(sb_event_id(ev), "k1");
    ck_assert_ptr_null(ev->fields); /* not parsed at admission */
    ck_assert_int_eq(sb_event_set_int(ev, "n", 2), 0);
    ck_assert_int_eq(sb_event_set_string(ev, "host", "edge\"01"), 0);
    ck_assert_int_eq(sb_event_set_string(ev, "bad", "\xc3"), -1); /* not UTF-8: refused, text unchanged */
    ck_assert_ptr_null(ev->fields);
    sb_event *copy = sb_event_clone(ev);
    ck_assert_ptr_null(copy->fields);
    assert_fields(copy, "{\"id\":\"k1\",\"table\":\"orders\",\"n\":2,\"host\":\"edge\\\"01\"}");
    /* a few reads take just those members from the text, sets winning */
    ck_assert_str_eq(sb_event_get_string(ev, "table"), "orders");
    ck_assert_int_eq(sb_event_get_int(ev, "n", 0), 2);
    ck_assert_str_eq(sb_event_get_string(ev, "host"), "edge\"01");
    ck_assert_ptr_null(sb_event_get_string(ev, "missing"));
    ck_assert_ptr_null(ev->fields);
    ck_assert_int_eq(sb_event_set_int(ev, "n", 3), 0); /* a read member follows a set */
    ck_assert_int_eq(sb_event_get_int(ev, "n", 0), 3);
    /* a step's addition is recorded as added and stays text too */
    ck_assert_int_eq(sb_event_add(ev, "msg_id", json_string("m-1")), 0);
    ck_assert_ptr_null(ev->fields);
    ck_assert_str_eq(sb_event_get_string(ev, "msg_id"), "m-1");
    char *added = sb_event_take_added(ev);
    ck_assert_str_eq(added, "{\"msg_id\":\"m-1\"}");
    free(added);
    ck_assert_ptr_null(sb_event_take_added(ev)); /* taken: nothing added since */
    const char *all = "{\"id\":\"k1\",\"table\":\"orders\",\"n\":3,\"host\":\"edge\\\"01\",\"msg_id\":\"m-1\"}";
    assert_fields(ev, all);
    json_t *want = json_loads(all, 0, NULL);
    ck_assert(json_equal(sb_event_view(ev), want)); /* the whole tree, built now, agrees */
    ck_assert_ptr_nonnull(ev->raw);                 /* and the text is kept */
    ck_assert_int_eq(sb_event_set_int(ev, "n", 4), 0); /* both views follow a set */
    ck_assert_int_eq(sb_event_get_int(ev, "n", 0), 4);
    json_object_set_new(want, "n", json_integer(4));
    ck_assert(json_equal(sb_event_view(ev), want));
    json_decref(want);
    sb_event_free(copy);
    sb_event_free(ev);
}
END_TEST

/* A member whose key is written with escapes can only be found by a
 * parse: the lookup falls back to the tree and still answers right. */
START_TEST(escaped_keys_fall_back_to_the_tree)
{
    char err[256];
    const char *text = "{\"table\":\"a\",\"t\\u0061ble\":\"b\",\"x\":1}";
    sb_event *ev = sb_event_new_json("fb", NULL, text, strlen(text), err, sizeof err);
    ck_assert_ptr_nonnull(ev);
    ck_assert_int_eq(sb_event_get_int(ev, "x", 0), 1); /* a plain key after the escaped one: no tree */
    ck_assert_ptr_null(ev->fields);
    ck_assert_str_eq(sb_event_get_string(ev, "table"), "b"); /* the escaped duplicate wins */
    ck_assert_ptr_nonnull(ev->fields);
    sb_event_free(ev);
}
END_TEST

/* The scan that checks a text indexes its members (up to 32); past that, a
 * key the text never names is absent without building the member index
 * (the freshness metrics look up finished_at on every event); a key spelt
 * only with escapes is still found. */
START_TEST(absent_keys_cost_no_index)
{
    char err[256];
    const char *text = "{\"id\":\"k1\",\"table\":\"orders\"}";
    sb_event *ev = sb_event_new_json("fb", "id", text, strlen(text), err, sizeof err);
    ck_assert_ptr_nonnull(ev);
    ck_assert_ptr_nonnull(ev->index); /* made by the scan */
    ck_assert_uint_eq(ev->nindex, 2);
    ck_assert_ptr_null(sb_event_get_string(ev, "finished_at"));
    ck_assert_str_eq(sb_event_get_string(ev, "table"), "orders");
    sb_event_free(ev);
    char wide[1024] = "{"; /* more members than the scan indexes */
    for (int i = 0; i < 40; i++)
        snprintf(wide + strlen(wide), sizeof wide - strlen(wide), "\"m%02d\":%d,", i, i);
    strcat(wide, "\"table\":\"orders\"}");
    ev = sb_event_new_json("fb", NULL, wide, strlen(wide), err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    ck_assert_ptr_null(ev->index);
    ck_assert_ptr_null(sb_event_get_string(ev, "finished_at"));
    ck_assert_ptr_null(ev->index);
    ck_assert_str_eq(sb_event_get_string(ev, "table"), "orders");
    ck_assert_ptr_nonnull(ev->index);
    ck_assert_uint_eq(ev->nindex, 41);
    sb_event_free(ev);
    const char *esc = "{\"id\":\"k2\",\"finished\\u005fat\":\"2026-12-06T00:00:00Z\"}";
    ev = sb_event_new_json("fb", "id", esc, strlen(esc), err, sizeof err);
    ck_assert_ptr_nonnull(ev);
    ck_assert_str_eq(sb_event_get_string(ev, "finished_at"), "2026-12-06T00:00:00Z");
    sb_event_free(ev);
    /* many near misses before the key (past the shortcut's 32 tries), and
     * a key at the very end of the text */
    char many[2048] = "{";
    for (int i = 0; i < 40; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "\"finished_%02d\":%d,", i, i);
    strcat(many, "\"finished_at\":\"x\",\"fz\":1}");
    ev = sb_event_new_json("fb", NULL, many, strlen(many), err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    ck_assert_str_eq(sb_event_get_string(ev, "finished_at"), "x");
    ck_assert_int_eq(sb_event_get_int(ev, "fz", 0), 1);
    ck_assert_ptr_null(sb_event_get_string(ev, "finished_zz"));
    sb_event_free(ev);
}
END_TEST

/* The id member is read from the text; escapes, duplicates and non-strings
 * resolve as a parse would (the last duplicate wins). */
START_TEST(id_member_as_jansson_reads_it)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\"id\":\"a\"}", "a"},
        {"{\"id\":\"a\",\"id\":\"b\"}", "b"},
        {"{\"id\":\"a\",\"id\":7}", "fb"},
        {"{\"id\":\"\"}", "fb"},
        {"{\"id\":\"x\\u0079\"}", "xy"},
        {"{\"i\\u0064\":\"esc\"}", "esc"},
        {"{\"id\":\"plain\",\"i\\u0064\":\"esc\"}", "esc"},
        {"{\"sub\":{\"id\":\"inner\"}}", "fb"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sb_event *ev = sb_event_new_json("fb", "id", cases[i].text, strlen(cases[i].text), err, sizeof err);
        ck_assert_msg(ev != NULL, "%s: %s", cases[i].text, err);
        ck_assert_str_eq(sb_event_id(ev), cases[i].want);
        sb_event_free(ev);
    }
    /* jansson would skip this NUL; the event refuses it */
    errno = 0;
    ck_assert_ptr_null(sb_event_new_json("fb", "id", "{\"a\":1\0}", 8, err, sizeof err));
    ck_assert_str_eq(err, "NUL byte at offset 6");
    ck_assert_int_eq(errno, EINVAL); /* the text's fault, not memory's: a source skips it */
    errno = 0;
    ck_assert_ptr_null(sb_event_new_json("fb", "id", "[1]", 3, err, sizeof err));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(sb_event_new_json(NULL, "id", "{\"id\":\"\"}", 9, err, sizeof err));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_str_eq(err, "no event id: the text has none and no fallback was given");
}
END_TEST

/* sb_event_append_json() of a raw-text event is the compact dump of its
 * fields, byte for byte, appended after what the buffer held. */
static void assert_append_is_dump(sb_event *ev)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    sb_json_append_string(&buf, &len, &cap, "x", 1); /* something before */
    ck_assert_int_eq(sb_event_append_json(ev, &buf, &len, &cap), 0);
    ck_assert_uint_eq(strlen(buf), len);
    sb_event *copy = sb_event_clone(ev);
    char *want = json_dumps(sb_event_fields(copy), JSON_COMPACT);
    ck_assert_msg(strncmp(buf, "\"x\"", 3) == 0 && strcmp(buf + 3, want) == 0, "got %s, want \"x\"%s", buf, want);
    free(want);
    sb_event_free(copy);
    free(buf);
}

/* sb_event_get_json(): field `key`'s JSON text (want), absent (want
 * NULL, rc 0) or not held as text (want NULL, rc -1). */
static void assert_json_field(sb_event *ev, const char *key, const char *want, int want_rc)
{
    const char *got = NULL;
    size_t len = 0;
    int rc = sb_event_get_json(ev, key, &got, &len);
    ck_assert_msg(rc == want_rc, "%s: rc %d, want %d", key, rc, want_rc);
    if (want)
        ck_assert_msg(len == strlen(want) && memcmp(got, want, len) == 0, "%s: got %.*s, want %s", key, (int)len,
                      got, want);
}

START_TEST(one_field_as_value_or_as_text_without_the_tree)
{
    static const char text[] = "{\"event_id\":\"e1\", \"s\": \"plain\", \"esc\":\"a\\\"b\", \"n\":123, \"r\":1.5,"
                               " \"o\":{\"x\":[1, 2]}, \"t\":true, \"nul\":null, \"s\":\"later\"}";
    char err[256];
    sb_event *ev = sb_event_new_json("fallback", "event_id", text, strlen(text), err, sizeof err);
    ck_assert_ptr_nonnull(ev);
    assert_json_field(ev, "s", "\"later\"", 1); /* a key written twice: the later one, as the tree has it */
    assert_json_field(ev, "esc", "\"a\\\"b\"", 1);
    assert_json_field(ev, "n", "123", 1);
    assert_json_field(ev, "r", "1.5", 1);
    assert_json_field(ev, "o", "{\"x\":[1,2]}", 1); /* the text is kept compact */
    assert_json_field(ev, "t", "true", 1);
    assert_json_field(ev, "nul", "null", 1);
    assert_json_field(ev, "absent", NULL, 0);
    ck_assert_int_eq(json_integer_value(sb_event_get_value(ev, "n")), 123);
    ck_assert_str_eq(json_string_value(sb_event_get_value(ev, "esc")), "a\"b");
    ck_assert_int_eq(json_array_size(json_object_get(sb_event_get_value(ev, "o"), "x")), 2);
    ck_assert(json_is_null(sb_event_get_value(ev, "nul")));
    ck_assert_ptr_null(sb_event_get_value(ev, "absent"));
    /* set and added fields win over the source's, still as text */
    ck_assert_int_eq(sb_event_set_string(ev, "s", "set \u00e9"), 0);
    ck_assert_int_eq(sb_event_add(ev, "added", json_integer(7)), 0);
    assert_json_field(ev, "s", "\"set \u00e9\"", 1);
    assert_json_field(ev, "added", "7", 1);
    ck_assert_str_eq(sb_event_get_string(ev, "s"), "set \u00e9");
    /* once the tree is built, the text is not the truth any more */
    json_object_set_new(sb_event_fields(ev), "n", json_integer(5));
    assert_json_field(ev, "n", NULL, -1);
    ck_assert_int_eq(json_integer_value(sb_event_get_value(ev, "n")), 5);
    sb_event_free(ev);
    /* a key written with escapes: the text cannot say without parsing */
    static const char esc[] = "{\"event_id\":\"e3\",\"k\\u0065y\":1}";
    ev = sb_event_new_json("fallback", "event_id", esc, strlen(esc), err, sizeof err);
    ck_assert_ptr_nonnull(ev);
    assert_json_field(ev, "key", NULL, -1);
    ck_assert_int_eq(json_integer_value(sb_event_get_value(ev, "key")), 1);
    sb_event_free(ev);
    /* an event built from a tree has no text */
    ev = sb_event_new_with_fields("e2", json_pack("{s:i}", "n", 3));
    assert_json_field(ev, "n", NULL, -1);
    ck_assert_int_eq(json_integer_value(sb_event_get_value(ev, "n")), 3);
    sb_event_free(ev);
}
END_TEST

/* What a step added is taken as one object's text, a key added twice
 * once with its later value; a failed step's additions are dropped from
 * the fields, whether the event holds text or a tree. */
START_TEST(added_fields_as_text)
{
    char err[256];
    const char *t = "{\"event_id\": \"e1\", \"n\": 5}";
    sb_event *ev = sb_event_new_json("fb", "event_id", t, strlen(t), err, sizeof err);
    ck_assert_int_eq(sb_event_add(ev, "a", json_integer(1)), 0);
    ck_assert_int_eq(sb_event_add(ev, "b", json_pack("{s:[i]}", "x", 2)), 0);
    ck_assert_int_eq(sb_event_add(ev, "a", json_string("two")), 0);
    char *added = sb_event_take_added(ev);
    ck_assert_str_eq(added, "{\"a\":\"two\",\"b\":{\"x\":[2]}}");
    free(added);
    ck_assert_str_eq(sb_event_get_string(ev, "a"), "two");
    ck_assert_int_eq(sb_event_add(ev, "c", json_integer(3)), 0);
    ck_assert_int_eq(sb_event_get_int(ev, "c", 0), 3);
    sb_event_discard_added(ev);
    ck_assert_ptr_null(sb_event_get_value(ev, "c"));
    ck_assert_str_eq(sb_event_get_string(ev, "a"), "two"); /* taken before: stays */
    ck_assert_ptr_null(sb_event_take_added(ev));
    ck_assert_int_eq(sb_event_add(ev, NULL, json_integer(1)), -1);
    ck_assert_ptr_null(sb_event_take_added(ev));
    /* a value holding a NUL (\u0000) is dropped and de-duplicated as well */
    ck_assert_int_eq(sb_event_add(ev, "z", json_stringn("a\0b", 3)), 0);
    sb_event_discard_added(ev);
    ck_assert_ptr_null(sb_event_get_value(ev, "z"));
    ck_assert_int_eq(sb_event_add(ev, "z", json_stringn("a\0b", 3)), 0);
    ck_assert_int_eq(sb_event_add(ev, "z", json_stringn("c\0d", 3)), 0);
    added = sb_event_take_added(ev);
    ck_assert_str_eq(added, "{\"z\":\"c\\u0000d\"}");
    free(added);
    sb_event_free(ev);
    ev = sb_event_new_with_fields("e2", json_pack("{s:i}", "n", 3));
    ck_assert_int_eq(sb_event_add(ev, "d", json_true()), 0);
    ck_assert(json_is_true(sb_event_get_value(ev, "d")));
    sb_event_discard_added(ev);
    ck_assert_ptr_null(sb_event_get_value(ev, "d"));
    ck_assert_int_eq(sb_event_add(ev, "e", json_null()), 0);
    added = sb_event_take_added(ev);
    ck_assert_str_eq(added, "{\"e\":null}");
    free(added);
    sb_event_free(ev);
}
END_TEST

/* sb_event_add_string() records what sb_event_add() of the jansson string
 * does, with and without the fields object built, and refuses what
 * json_stringn() refuses. */
START_TEST(added_string_is_the_added_value)
{
    char err[256];
    const char *t = "{\"event_id\": \"e1\", \"m\": \"old\"}";
    sb_event *ev = sb_event_new_json("fb", "event_id", t, strlen(t), err, sizeof err);
    ck_assert_int_eq(sb_event_add_string(ev, "id", "1234", 4), 0);
    ck_assert_int_eq(sb_event_add_string(ev, "q", "a\"\\\n\xc3\xa9", 6), 0);
    ck_assert_int_eq(sb_event_add_string(ev, "bad", "\xff", 1), -1);
    ck_assert_int_eq(sb_event_add_string(ev, NULL, "x", 1), -1);
    ck_assert_str_eq(sb_event_get_string(ev, "id"), "1234");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    ck_assert_int_eq(sb_event_append_json(ev, &buf, &len, &cap), 0);
    ck_assert_str_eq(buf, "{\"event_id\":\"e1\",\"m\":\"old\",\"id\":\"1234\",\"q\":\"a\\\"\\\\\\n\xc3\xa9\"}");
    free(buf);
    char *added = sb_event_take_added(ev);
    ck_assert_str_eq(added, "{\"id\":\"1234\",\"q\":\"a\\\"\\\\\\n\xc3\xa9\"}");
    free(added);
    /* a key already read keeps its value current; a NUL goes as \u0000 */
    ck_assert_str_eq(sb_event_get_string(ev, "m"), "old");
    ck_assert_int_eq(sb_event_add_string(ev, "m", "new", 3), 0);
    ck_assert_str_eq(sb_event_get_string(ev, "m"), "new");
    assert_fields(ev, "{\"event_id\":\"e1\",\"m\":\"new\",\"id\":\"1234\",\"q\":\"a\\\"\\\\\\n\u00e9\"}");
    ck_assert_int_eq(sb_event_add_string(ev, "z", "a\0b", 3), 0);
    added = sb_event_take_added(ev);
    ck_assert_str_eq(added, "{\"m\":\"new\",\"z\":\"a\\u0000b\"}");
    free(added);
    char *payload = sb_event_to_payload(ev, NULL); /* the ledger's copy reads back, NUL and all */
    sb_event *back = sb_event_from_payload(payload, err, sizeof err);
    ck_assert_msg(back != NULL, "%s", err);
    ck_assert_int_eq(json_string_length(sb_event_get_value(back, "z")), 3);
    sb_event_free(back);
    free(payload);
    json_t *f = sb_event_fields(ev); /* the tree built (the NUL allowed): the value goes into it */
    ck_assert_int_eq(json_string_length(json_object_get(f, "z")), 3);
    ck_assert_int_eq(sb_event_add_string(ev, "id", "5678", 4), 0);
    ck_assert_str_eq(json_string_value(json_object_get(f, "id")), "5678");
    added = sb_event_take_added(ev);
    ck_assert_str_eq(added, "{\"id\":\"5678\"}");
    free(added);
    sb_event_free(ev);
}
END_TEST

/* Short texts live in the event's own allocation and long ones apart
 * (dropped when the tree is built); source names are shared. Run under
 * ASan, this is where a wrong free would show. */
START_TEST(text_in_block_or_apart_and_shared_source_names)
{
    char err[256];
    static char big[6000];
    int n = snprintf(big, sizeof big, "{\"event_id\": \"big\", \"pad\": \"%05000d\"}", 7);
    const char *small = "{\"event_id\": \"small\"}";
    sb_event *a = sb_event_new_json("fb", "event_id", big, (size_t)n, err, sizeof err);
    sb_event *b = sb_event_new_json(NULL, "id", small, strlen(small), err, sizeof err);
    ck_assert_ptr_null(b); /* no id and no fallback */
    b = sb_event_new_json("fallback-id", "id", small, strlen(small), err, sizeof err);
    ck_assert_str_eq(sb_event_id(a), "big");
    ck_assert_str_eq(sb_event_id(b), "fallback-id");
    ck_assert_int_eq(json_string_length(json_object_get(sb_event_fields(a), "pad")), 5000);
    ck_assert_str_eq(json_string_value(json_object_get(sb_event_fields(b), "event_id")), "small");
    sb_event_set_source(a, "in");
    sb_event_set_source(b, "in");
    ck_assert_ptr_eq(sb_event_source(a), sb_event_source(b));
    sb_event_set_source(a, sb_event_source(a));
    ck_assert_str_eq(sb_event_source(a), "in");
    sb_event *c = sb_event_clone(b);
    ck_assert_str_eq(sb_event_source(c), "in");
    sb_event_set_source(c, NULL);
    ck_assert_ptr_null(sb_event_source(c));
    sb_event_free(a);
    sb_event_free(b);
    sb_event_free(c);
}
END_TEST

/* The payload text is what jansson would write for the envelope, whether
 * its id and source are written as they are (plain ASCII) or quoted with
 * escapes, with or without a source, and for received times shared by
 * several events or not. */
START_TEST(payload_text_is_the_envelope_json_dumps_writes)
{
    static const char *const ids[] = {"run-00000001", "a", "", "\\u00e9t\\u00e9", "tab\\tx", "q\\\"x", "x/y",
                                      "0123456789abcdef0123"};
    static const char *const sources[] = {"in", NULL, "s\\u00e9", "in"};
    static const int64_t times[] = {1796662698252444, 1796662698252444, -5, 0, INT64_MAX, INT64_MIN, INT64_MIN,
                                    1796662698252445};
    char err[256];
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++)
        for (size_t j = 0; j < sizeof sources / sizeof *sources; j++)
            for (size_t t = 0; t < sizeof times / sizeof *times; t++) {
                char text[256], src[64];
                int n = snprintf(text, sizeof text, "{\"event_id\":\"%s\",\"n\":%zu,\"s\":\"v\"}", ids[i], t);
                sb_event *ev = sb_event_new_json("fb", "event_id", text, (size_t)n, err, sizeof err);
                ck_assert_msg(ev != NULL, "%s: %s", text, err);
                json_t *js = NULL;
                if (sources[j]) { /* the source name unescaped, as the config holds it */
                    snprintf(src, sizeof src, "\"%s\"", sources[j]);
                    js = json_loads(src, JSON_DECODE_ANY, NULL);
                    sb_event_set_source(ev, json_string_value(js));
                }
                sb_event_set_received_us(ev, times[t]);
                /* the fields as the source wrote them (compact already), the rest as jansson writes it */
                json_t *jid = json_string(sb_event_id(ev));
                char *qid = json_dumps(jid, JSON_ENCODE_ANY), *qsrc = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
                char *want = sb_asprintf("{\"id\":%s,\"source\":%s,\"received_us\":%" PRId64 ",\"fields\":%s}",
                                         qid, qsrc ? qsrc : "null", times[t], text);
                char *got = sb_event_to_payload(ev, NULL);
                ck_assert_str_eq(got, want);
                free(got);
                free(want);
                free(qid);
                free(qsrc);
                json_decref(jid);
                json_decref(js);
                sb_event_free(ev);
            }
}
END_TEST

/* What the ledger keeps of a source's event (sb_ledger_new.fields_only):
 * the fields as the payload has them; and nothing, as the payload, for an
 * event whose id or source is not UTF-8 (the ledger writes them into the
 * payload when it is read, so the batch must be refused at admission, as
 * a whole payload's would be). */
START_TEST(fields_text_is_the_payloads_fields)
{
    char err[256];
    const char *text = " {\"event_id\": \"e\u00e9\", \"n\": 5} ";
    sb_event *ev = sb_event_new_json("fb", "event_id", text, strlen(text), err, sizeof err);
    ck_assert_msg(ev != NULL, "%s", err);
    sb_event_set_source(ev, "in");
    sb_strbuf b = {0};
    sb_strbuf_add(&b, "x", 1);
    ck_assert_int_eq(sb_event_append_fields(ev, &b), 0);
    ck_assert_str_eq(b.p, "x{\"event_id\":\"e\u00e9\",\"n\":5}");
    char *payload = sb_event_to_payload(ev, NULL);
    json_t *whole = json_loads(payload, 0, NULL), *fields = json_loads(b.p + 1, 0, NULL);
    ck_assert(json_equal(json_object_get(whole, "fields"), fields));
    json_decref(whole);
    json_decref(fields);
    free(payload);
    sb_event_free(ev);

    ev = sb_event_new("bad\xff");
    ck_assert_int_eq(sb_event_append_fields(ev, &b), -1);
    ck_assert_ptr_null(sb_event_to_payload(ev, NULL));
    sb_event_free(ev);
    ev = sb_event_new("ok");
    sb_event_set_source(ev, "s\xc3");
    ck_assert_int_eq(sb_event_append_fields(ev, &b), -1);
    ck_assert_str_eq(b.p, "x{\"event_id\":\"e\u00e9\",\"n\":5}"); /* as it was */
    sb_event_free(ev);
    free(b.p);
}
END_TEST

/* Blocks for a thread to give back (malloc'd here, as the pool's are),
 * NULL-terminated, each `cap` bytes; with `hold`, the giver waits on it
 * twice before it exits (once its gifts are given, and to be let go). */
struct gift {
    void *blocks[80];
    uint32_t cap;
    pthread_barrier_t *hold;
    void *got; /* what a taker thread took after the gift */
    uint32_t got_cap;
    size_t need;
    sb_event *events[80]; /* or events to free, NULL-terminated */
};

static void *give_blocks(void *arg)
{
    struct gift *g = arg;
    for (int i = 0; g->blocks[i]; i++)
        sb_event_block_give(g->blocks[i], g->cap);
    for (int i = 0; g->events[i]; i++)
        sb_event_free(g->events[i]);
    if (g->hold) {
        pthread_barrier_wait(g->hold);
        pthread_barrier_wait(g->hold);
    }
    return NULL; /* the rest of this thread's gifts go to the pool as it exits */
}

static void *take_block(void *arg)
{
    struct gift *g = arg;
    g->got = sb_event_block_take(g->need, &g->got_cap);
    return NULL;
}

static void *new_event(void *arg)
{
    struct gift *g = arg;
    char err[256];
    g->got = sb_event_new_json("x", "event_id", "{\"event_id\":\"e\"}", 16, err, sizeof err);
    return NULL;
}

static void run_thread(void *(*fn)(void *), struct gift *g)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, fn, g), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}

static int was_given(const struct gift *g, const void *p)
{
    for (int i = 0; g->blocks[i] || g->events[i]; i++)
        if (g->blocks[i] == p || (void *)g->events[i] == p)
            return 1;
    return 0;
}

/* Event memory freed on one thread is reused by another: 64 gifts move to
 * the pool while the giving thread goes on, fewer when it exits; an event
 * freed serves the next event made. A block too small for the one asked
 * for is not handed out. Each taker is a new thread, whose own lists are
 * empty: it takes from the pool, newest gifts first. */
START_TEST(event_blocks_freed_on_one_thread_serve_another)
{
    uint32_t cap;
    void *probe = sb_event_block_take(300, &cap);
    ck_assert_ptr_nonnull(probe);
    ck_assert_uint_eq(cap, 512);
    sb_event_block_give(probe, cap);

    /* 64 gifts, the giver still running */
    pthread_barrier_t hold;
    pthread_barrier_init(&hold, NULL, 2);
    struct gift g = {.cap = 512, .need = 400, .hold = &hold};
    for (int i = 0; i < 64; i++)
        g.blocks[i] = sb_xmalloc(512);
    pthread_t giver;
    ck_assert_int_eq(pthread_create(&giver, NULL, give_blocks, &g), 0);
    pthread_barrier_wait(&hold);
    run_thread(take_block, &g);
    ck_assert_msg(was_given(&g, g.got), "a new block, not one given back");
    ck_assert_uint_eq(g.got_cap, 512);
    pthread_barrier_wait(&hold);
    ck_assert_int_eq(pthread_join(giver, NULL), 0);
    pthread_barrier_destroy(&hold);
    sb_event_block_give(g.got, g.got_cap);

    /* 5 gifts, given back as the giver exits */
    struct gift few = {.cap = 512, .need = 400};
    for (int i = 0; i < 5; i++)
        few.blocks[i] = sb_xmalloc(512);
    run_thread(give_blocks, &few);
    run_thread(take_block, &few);
    ck_assert_msg(was_given(&few, few.got), "a new block, not one of the 5 given back");
    sb_event_block_give(few.got, few.got_cap);

    /* events: made on this thread, freed on another, reused by a third */
    struct gift evs = {0};
    char err[256];
    for (int i = 0; i < 3; i++) {
        evs.events[i] = sb_event_new_json("x", "event_id", "{\"event_id\":\"e\"}", 16, err, sizeof err);
        ck_assert_ptr_nonnull(evs.events[i]);
    }
    run_thread(give_blocks, &evs);
    run_thread(new_event, &evs);
    ck_assert_msg(was_given(&evs, evs.got), "a new event's memory, not a freed one's");
    ck_assert_str_eq(sb_event_id(evs.got), "e");
    sb_event_free(evs.got);

    struct gift small = {.cap = 256, .need = 600};
    small.blocks[0] = sb_xmalloc(256);
    run_thread(give_blocks, &small);
    run_thread(take_block, &small);
    ck_assert_ptr_ne(small.got, small.blocks[0]);
    ck_assert_uint_eq(small.got_cap, 768);
    sb_event_block_give(small.got, small.got_cap);
    void *huge = sb_event_block_take(100000, &cap);
    ck_assert_uint_eq(cap, 0); /* not pooled */
    free(huge);
}
END_TEST

START_TEST(append_json_is_the_compact_dump)
{
    static const char *const texts[] = {
        "{ }",
        "{\"event_id\": \"e1\", \"n\": 5}",
        "\t{\n \"a b\" : \"x \\\" y \\\\\" ,\"c\":[ 1 , {\"d\" : null}, \"\\n\\u0001\" ] ,\r\n \"e\":true }",
        "{\"q\":\"\\\\\",\"r\":\" \\\\\\\" \",\"s\":-1.5}",
        "{}",
        " {\"event_id\":\"e1\",\"s\":\"a b \\\" c\",\"o\":{\"x\":[1,2]}}\n",
        NULL, /* longer than the event keeps compact: kept as it came, compacted when appended */
    };
    static char big[6000];
    snprintf(big, sizeof big, "{ \"event_id\": \"big\",\n \"pad\": \"%05000d\", \"a\": [ 1, 2 ] }", 3);
    char err[256];
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        const char *text = texts[i] ? texts[i] : big;
        sb_event *ev = sb_event_new_json("fb", "event_id", text, strlen(text), err, sizeof err);
        ck_assert_msg(ev != NULL, "%s: %s", text, err);
        ck_assert_int_eq(ev->raw_compact, texts[i] != NULL); /* made compact by the scan */
        assert_append_is_dump(ev);
        sb_event_set_string(ev, "k", "v"); /* spliced in, also into an empty object */
        ck_assert_ptr_nonnull(ev->raw);
        assert_append_is_dump(ev);
        sb_event_fields(ev); /* the tree from now on */
        ck_assert_ptr_null(ev->raw);
        assert_append_is_dump(ev);
        sb_event_free(ev);
    }
    /* a member set again, over the source's or twice: published once, the later value */
    const char *t = "{\"event_id\": \"e2\", \"n\": 5, \"m\": 1}";
    sb_event *ev = sb_event_new_json("fb", "event_id", t, strlen(t), err, sizeof err);
    sb_event_set_string(ev, "n", "six");
    sb_event_set_string(ev, "k", "a");
    sb_event_set_string(ev, "k", "b");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    ck_assert_int_eq(sb_event_append_json(ev, &buf, &len, &cap), 0);
    ck_assert_str_eq(buf, "{\"event_id\":\"e2\",\"n\":\"six\",\"m\":1,\"k\":\"b\"}");
    free(buf);
    sb_event_free(ev);
}
END_TEST

START_TEST(run_id_is_stable_and_63_bit)
{
    int64_t a = sb_run_id("edw.orders|2026-11-23|x"), b = sb_run_id("edw.orders|2026-11-23|x");
    ck_assert_int_eq(a, b);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ne(a, sb_run_id("edw.orders|2026-11-24|x"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("event");
    TCase *tc = tcase_create("event");
    tcase_add_test(tc, raw_text_is_kept_and_setters_are_spliced);
    tcase_add_test(tc, empty_object_and_bad_text);
    tcase_add_test(tc, fields_are_built_on_first_read);
    tcase_add_test(tc, id_member_as_jansson_reads_it);
    tcase_add_test(tc, escaped_keys_fall_back_to_the_tree);
    tcase_add_test(tc, absent_keys_cost_no_index);
    tcase_add_test(tc, append_json_is_the_compact_dump);
    tcase_add_test(tc, added_fields_as_text);
    tcase_add_test(tc, added_string_is_the_added_value);
    tcase_add_test(tc, text_in_block_or_apart_and_shared_source_names);
    tcase_add_test(tc, one_field_as_value_or_as_text_without_the_tree);
    tcase_add_test(tc, run_id_is_stable_and_63_bit);
    tcase_add_test(tc, payload_text_is_the_envelope_json_dumps_writes);
    tcase_add_test(tc, fields_text_is_the_payloads_fields);
    tcase_add_test(tc, event_blocks_freed_on_one_thread_serve_another);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
