/*
 * meshnet-wait: the first process of a container started through the
 * meshnet Docker proxy (weave's weavewait, /w/w). It waits until the proxy
 * has attached the container (interface `ethwe` up, with an IPv4 address)
 * and then execs the container's real entrypoint, so that the program never
 * runs without its mesh address. Built with `gcc -static` by build.rs so it
 * runs in any image, even one without a libc.
 */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IFNAME "ethwe"

/* True when IFNAME exists, is up and has an IPv4 address. */
static int attached(int fd)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, IFNAME, IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
        return 0;
    if (!(ifr.ifr_flags & IFF_UP))
        return 0;
    memset(&ifr.ifr_addr, 0, sizeof ifr.ifr_addr);
    ifr.ifr_addr.sa_family = AF_INET;
    return ioctl(fd, SIOCGIFADDR, &ifr) == 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "meshnet-wait: No command specified\n");
        return 1;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("meshnet-wait: socket");
        return 1;
    }
    struct timespec pause = {0, 20 * 1000 * 1000};
    while (!attached(fd))
        nanosleep(&pause, NULL);
    close(fd);
    execvp(argv[1], argv + 1);
    fprintf(stderr, "meshnet-wait: cannot run %s: %s\n", argv[1], strerror(errno));
    return 127;
}
