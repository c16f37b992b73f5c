/*
 * syncbridge/syncbridge.h - the plugin SDK in one include.
 *
 * Plugin authors include this header and build against the pkg-config
 * module "syncbridge" (`pkg-config --cflags --libs syncbridge`). Everything
 * in this directory is public and versioned by SB_ABI_MAJOR/SB_ABI_MINOR;
 * nothing else of the core is.
 */
#ifndef SYNCBRIDGE_SYNCBRIDGE_H
#define SYNCBRIDGE_SYNCBRIDGE_H

#include <syncbridge/buf.h>
#include <syncbridge/decode.h>
#include <syncbridge/event.h>
#include <syncbridge/log.h>
#include <syncbridge/metrics.h>
#include <syncbridge/options.h>
#include <syncbridge/plugin.h>

#endif
