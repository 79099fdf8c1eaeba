/* SPDX-License-Identifier: BSD-2-Clause */

/*
 * The VM loaders' cfg; see nffi_shim_cfg.h.  Plain C and nothing else, so
 * that tests/fuzz can run it under libFuzzer.
 */

#include <string.h>

#include "nffi_shim_cfg.h"


int
nffi_shim_cfg_parse(const char *cfg, nffi_shim_cfg_t *parsed)
{
    const char  *comma, *end;

    if (cfg == NULL) {
        return NFFI_SHIM_CFG_NIL;
    }

    comma = strchr(cfg, ',');

    if (comma == NULL) {
        return NFFI_SHIM_CFG_NO_COMMA;
    }

    parsed->target = cfg;
    parsed->target_len = comma - cfg;
    parsed->fresh = 0;

    if (parsed->target_len && cfg[parsed->target_len - 1] == '?') {
        parsed->fresh = 1;
        parsed->target_len--;
    }

    parsed->function = comma + 1;
    end = strchr(parsed->function, ',');

    if (end) {
        parsed->function_len = end - parsed->function;
        parsed->rest = end + 1;

    } else {
        parsed->function_len = strlen(parsed->function);
        parsed->rest = NULL;
    }

    if (parsed->target_len == 0) {
        return NFFI_SHIM_CFG_NO_TARGET;
    }

    if (parsed->function_len == 0) {
        return NFFI_SHIM_CFG_NO_FUNCTION;
    }

    return NFFI_SHIM_CFG_OK;
}
