/* Infrahub priority filter in C: keeps events whose priority (1..5) is within the plugin
 * config's `min_priority`..`max_priority` (default 1..5) and drops the others, saying why.
 * Built against the router's WIT with wit-bindgen's C generator (see ../build.sh). */
#include "filter.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The number after `"key":` in the config JSON, or `fallback`. The config is a flat object
 * of numbers here, so a scan is enough (no JSON library in the component). */
static long config_number(const filter_string_t *cfg, const char *key, long fallback) {
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 2 <= cfg->len; i++) {
        if (cfg->ptr[i] != '"' || memcmp(cfg->ptr + i + 1, key, klen) != 0 || cfg->ptr[i + 1 + klen] != '"') {
            continue;
        }
        size_t j = i + klen + 2;
        while (j < cfg->len && (cfg->ptr[j] == ' ' || cfg->ptr[j] == ':')) j++;
        long value = 0;
        int digits = 0;
        for (; j < cfg->len && cfg->ptr[j] >= '0' && cfg->ptr[j] <= '9'; j++, digits++) {
            value = value * 10 + (cfg->ptr[j] - '0');
        }
        return digits ? value : fallback;
    }
    return fallback;
}

void exports_filter_filter(filter_borrow_event_t event, filter_verdict_t *ret) {
    filter_string_t cfg;
    eventyard_plugin_config_get(&cfg);
    long min = config_number(&cfg, "min_priority", 1);
    long max = config_number(&cfg, "max_priority", 5);
    filter_string_free(&cfg);
    unsigned priority = eventyard_plugin_types_method_event_priority(event);
    /* In C, a borrowed handle is given back explicitly before returning. */
    eventyard_plugin_types_event_drop_borrow(event);
    if (priority >= min && priority <= max) {
        ret->tag = EVENTYARD_PLUGIN_TYPES_VERDICT_KEEP;
        return;
    }
    char reason[80];
    snprintf(reason, sizeof reason, "priority %u is outside %ld..%ld", priority, min, max);
    ret->tag = EVENTYARD_PLUGIN_TYPES_VERDICT_DROP;
    filter_string_dup(&ret->val.drop, reason);
}
