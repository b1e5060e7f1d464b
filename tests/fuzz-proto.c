/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the wire protocol decoder (what the daemon runs on
 * every packet from a client, and the client on every packet from the
 * daemon).  Input byte 0 picks the mode: odd, the input is the packet as is;
 * even, a valid header of type byte 1 is put in front of the rest, so that
 * the fuzzer spends its time in the payload decoders.
 */
#include "config.h"

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tierd-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static alignas(8) uint8_t buf[TIERD_PROTO_MAX_MSG];
	const char *why = NULL;
	size_t len;
	int r;

	if (size < 2)
		return 0;
	if (data[0] & 1) {
		len = size - 1 < sizeof(buf) ? size - 1 : sizeof(buf);
		memcpy(buf, data + 1, len);
	} else {
		struct tierd_msg_hdr h = {
			.magic = TIERD_PROTO_MAGIC, .major = TIERD_PROTO_MAJOR, .minor = TIERD_PROTO_MINOR,
			.type = (uint16_t)(data[1] % TIERD_MSG_TYPE_MAX + 1), .request_id = 1,
		};
		size_t pl = size - 2;

		if (pl > sizeof(buf) - sizeof(h))
			pl = sizeof(buf) - sizeof(h);
		h.length = (uint32_t)pl;
		memcpy(buf, &h, sizeof(h));
		memcpy(buf + sizeof(h), data + 2, pl);
		len = sizeof(h) + pl;
	}
	r = tierd_proto_validate(buf, len, &why);
	/* A refusal always says why. */
	if (r && !why)
		__builtin_trap();
	return 0;
}
