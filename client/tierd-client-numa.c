/* SPDX-License-Identifier: MIT */
/*
 * The NUMA node a client says it works on (HELLO): the one the application
 * names, else $TIERD_NUMA_NODE, else the node of the PCI device named by
 * $TIERD_PCI_DEVICE (a GPU: cudaDeviceGetPCIBusId gives its address), read
 * from sysfs.  Unsaid, the daemon takes the node of the client's CPUs.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tierd-client-int.h"

int tdc_pci_numa_node(const char *root, const char *addr)
{
	unsigned dom = 0, bus, dev, fn;
	char path[PATH_MAX], line[32], tail;
	FILE *f;
	long node;
	char *end;

	/* Hex digits and separators only: scanf's %x would take "0x" too. */
	if (!addr || addr[strspn(addr, "0123456789abcdefABCDEF:.")])
		return -EINVAL;
	/* "0000:3B:00.0" (CUDA), "00000000:3b:00.0" (nvidia-smi), "3b:00.0". */
	if (sscanf(addr, "%x:%x:%x.%x%c", &dom, &bus, &dev, &fn, &tail) != 4) {
		dom = 0;
		if (sscanf(addr, "%x:%x.%x%c", &bus, &dev, &fn, &tail) != 3)
			return -EINVAL;
	}
	if (dom > 0xffff || bus > 0xff || dev > 0x1f || fn > 7)
		return -EINVAL;
	snprintf(path, sizeof(path), "%s/bus/pci/devices/%04x:%02x:%02x.%x/numa_node", root, dom, bus, dev, fn);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		return -ENODATA;
	}
	fclose(f);
	node = strtol(line, &end, 10);
	if (end == line || (*end && *end != '\n'))
		return -EINVAL;
	/* -1: the firmware does not say (one-node machines, some VMs). */
	if (node < 0)
		return -ENODATA;
	return node > TIERD_NODE_MAX ? -ERANGE : (int)node;
}

EXPORT int tierd_client_numa_node_of_pci(const char *pci_addr)
{
	return tdc_pci_numa_node("/sys", pci_addr);
}

int tdc_numa_node_default(void)
{
	const char *v = getenv("TIERD_NUMA_NODE");
	char *end;
	long n;

	if (v && *v) {
		n = strtol(v, &end, 10);
		if (!*end && n >= 0 && n <= TIERD_NODE_MAX)
			return (int)n;
	}
	v = getenv("TIERD_PCI_DEVICE");
	if (v && *v) {
		n = tierd_client_numa_node_of_pci(v);
		if (n >= 0)
			return (int)n;
	}
	return TIERD_NODE_UNSAID;
}
