/* journald MESSAGE_IDs of the coordinator's events. Each one has a catalog
 * entry (Subject, Defined-By, Documentation, body) in units/dmtcp.catalog;
 * tests/system/test_coordinator.py checks that the two lists agree.
 * Never change an ID: queries and dmtcpctl history depend on them. */
#pragma once

#define DMTCP_MESSAGE_COORD_STARTED      "35ebdebbf7c341e4a24f96f82222c520"
#define DMTCP_MESSAGE_MEMBER_JOINED      "d6ac92a154bf4c3a84e603db64d572b0"
#define DMTCP_MESSAGE_MEMBER_LEFT        "7208f0fa85da4ec1b87133d9f9f546a6"
#define DMTCP_MESSAGE_CKPT_STARTED       "323955bfb6544a2881198f8e80c9c36c"
#define DMTCP_MESSAGE_CKPT_COMMITTED     "00cef09204084553a62a15b7e86b3f4a"
#define DMTCP_MESSAGE_CKPT_ABORTED       "32d5f29dd4e84f0787b525ff25f11d2b"
#define DMTCP_MESSAGE_RESTART_COMPLETED  "b56a4571c34143b6a05882ea89f2a0e2"
#define DMTCP_MESSAGE_PEER_REFUSED       "f9f143547d934576b7243d4a419df04e"
