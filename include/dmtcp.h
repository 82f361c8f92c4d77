/* dmtcp.h — the application interface of dmtcp (placeholder until the runtime lands). */
#pragma once
