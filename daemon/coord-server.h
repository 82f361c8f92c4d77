/* The coordinator server: accepts connections, authenticates peers, turns
 * messages into state machine events and executes the state machine's
 * actions (sending, committing, logging), serves STATUS/LIST and the stdin
 * console, and keeps the timers (HELLO deadline, checkpoint interval,
 * restart timeout, kill grace, idle exit) on sd-event. */
#pragma once

#include <systemd/sd-event.h>

#include "coord-auth.h"
#include "coord-net.h"
#include "coord-options.h"
#include "coord-state.h"

#define COORD_MAX_CONNS       4096u
#define COORD_HELLO_TIMEOUT_USEC (5u * 1000u * 1000u)

struct coord_server {
        sd_event *event;
        struct coord_state *state;
        const struct coord_options *opts;

        struct coord_listener listeners[COORD_MAX_LISTENERS];
        size_t n_listeners;
        sd_event_source *listen_retry;
        char socket_path[108];          /* Unix listener path (status, cleanup) */
        uint16_t tcp_port;

        struct coord_conn **slots;      /* connection table, indexed by token & slot mask */
        size_t max_conns, n_conns;
        uint64_t serial;

        char secret[COORD_SECRET_LEN + 1];
        bool have_secret;
        char restart_bin[PATH_MAX];

        sd_event_source *timer;         /* the state machine's next deadline */
        sd_event_source *idle_timer;
        sd_event_source *console;
        char console_buf[256];
        size_t console_len;

        bool draining;
        uint64_t prune_after;           /* a generation just committed: prune once its news is out */
        bool ckpt_queued;               /* a checkpoint request waits for the one in flight */
        uint64_t queued_requester;
        int queued_op;
        char notify_status[256];
        int exit_status;
};

int coord_server_new(sd_event *e, const struct coord_options *o, const struct coord_config *cfg,
                     struct coord_server **ret);
struct coord_server *coord_server_free(struct coord_server *srv);

/* Start serving a listening socket. */
int coord_server_add_listener(struct coord_server *srv, const struct coord_listener *l);
/* Read one-letter commands from stdin. */
int coord_server_enable_console(struct coord_server *srv);
/* Everything is set up: arm timers, report READY=1 to systemd. */
int coord_server_start(struct coord_server *srv);
