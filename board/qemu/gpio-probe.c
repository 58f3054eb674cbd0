// SPDX-License-Identifier: MIT OR Apache-2.0
// Rig self-test for board/qemu-system.sh: proves, inside the QEMU guest, that the GPIO
// character device (GPIO v2 uAPI, the one gpiocdev/libgpiod use) works against gpio-sim,
// and reports a chip's label (used on -M raspi3b to check pinctrl-bcm2835).
// Built on the host with: aarch64-linux-gnu-gcc -static -O2 -o gpio-probe gpio-probe.c
//
//   gpio-probe info CHIPDEV                 -> "chip=<name> label=<label> lines=<n>"
//   gpio-probe sim  CHIPDEV SYSFS_CHIP_DIR  -> drives line 0, reads it back through
//        SYSFS_CHIP_DIR/sim_gpio0/value; injects pull-up/pull-down on line 1 through
//        SYSFS_CHIP_DIR/sim_gpio1/pull and reads it through the uAPI.
// Prints "PROBE-PASS: ..." / "PROBE-FAIL: ..." lines; exit status = number of failures.
#include <errno.h>
#include <fcntl.h>
#include <linux/gpio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what, const char *detail) {
    printf("PROBE-%s: %s (%s)\n", ok ? "PASS" : "FAIL", what, detail);
    if (!ok) failures++;
}

static int read_sysfs(const char *dir, int line, const char *attr, char *buf, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/sim_gpio%d/%s", dir, line, attr);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t r = read(fd, buf, n - 1);
    close(fd);
    if (r < 0) return -1;
    buf[r] = 0;
    buf[strcspn(buf, "\n")] = 0;
    return 0;
}

static int write_sysfs(const char *dir, int line, const char *attr, const char *val) {
    char path[512];
    snprintf(path, sizeof path, "%s/sim_gpio%d/%s", dir, line, attr);
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    ssize_t w = write(fd, val, strlen(val));
    close(fd);
    return w < 0 ? -1 : 0;
}

// Requests one line with the given flags; returns the line-request fd or -1.
static int request_line(int chip, unsigned off, unsigned long long flags, int initial) {
    struct gpio_v2_line_request req;
    memset(&req, 0, sizeof req);
    req.offsets[0] = off;
    req.num_lines = 1;
    req.config.flags = flags;
    if (flags & GPIO_V2_LINE_FLAG_OUTPUT) {
        req.config.num_attrs = 1;
        req.config.attrs[0].attr.id = GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES;
        req.config.attrs[0].attr.values = initial ? 1 : 0;
        req.config.attrs[0].mask = 1;
    }
    strcpy(req.consumer, "ember-probe");
    if (ioctl(chip, GPIO_V2_GET_LINE_IOCTL, &req) < 0) return -1;
    return req.fd;
}

static int get_value(int lfd) {
    struct gpio_v2_line_values v = {.bits = 0, .mask = 1};
    if (ioctl(lfd, GPIO_V2_LINE_GET_VALUES_IOCTL, &v) < 0) return -1;
    return (int)(v.bits & 1);
}

static int set_value(int lfd, int val) {
    struct gpio_v2_line_values v = {.bits = val ? 1 : 0, .mask = 1};
    return ioctl(lfd, GPIO_V2_LINE_SET_VALUES_IOCTL, &v);
}

int main(int argc, char **argv) {
    char buf[128], detail[256];
    if (argc < 3) {
        fprintf(stderr, "usage: %s info CHIPDEV | sim CHIPDEV SYSFS_CHIP_DIR\n", argv[0]);
        return 2;
    }
    int chip = open(argv[2], O_RDWR | O_CLOEXEC);
    if (chip < 0) {
        snprintf(detail, sizeof detail, "open %s: %s", argv[2], strerror(errno));
        check(0, "open chip", detail);
        return failures;
    }
    struct gpiochip_info info;
    memset(&info, 0, sizeof info);
    if (ioctl(chip, GPIO_GET_CHIPINFO_IOCTL, &info) < 0) {
        check(0, "chip info", strerror(errno));
        return failures;
    }
    printf("chip=%s label=%s lines=%u\n", info.name, info.label, info.lines);
    if (strcmp(argv[1], "info") == 0) return 0;
    if (strcmp(argv[1], "sim") != 0 || argc < 4) return 2;
    const char *dir = argv[3];

    // (1) output driven by the guest program, observed through gpio-sim's sysfs.
    int out = request_line(chip, 0, GPIO_V2_LINE_FLAG_OUTPUT, 1);
    check(out >= 0, "request line 0 as output", out >= 0 ? "ok" : strerror(errno));
    if (out >= 0) {
        int ok = read_sysfs(dir, 0, "value", buf, sizeof buf) == 0 && strcmp(buf, "1") == 0;
        snprintf(detail, sizeof detail, "sim_gpio0/value=%s after driving high", ok ? "1" : buf);
        check(ok, "gpio-sim sees line 0 high", detail);
        set_value(out, 0);
        ok = read_sysfs(dir, 0, "value", buf, sizeof buf) == 0 && strcmp(buf, "0") == 0;
        snprintf(detail, sizeof detail, "sim_gpio0/value=%s after driving low", buf);
        check(ok, "gpio-sim sees line 0 low", detail);
        close(out);
    }

    // (2) input injected by the "outside world" (gpio-sim pull), read through the uAPI.
    int in = request_line(chip, 1, GPIO_V2_LINE_FLAG_INPUT, 0);
    check(in >= 0, "request line 1 as input", in >= 0 ? "ok" : strerror(errno));
    if (in >= 0) {
        int w = write_sysfs(dir, 1, "pull", "pull-up");
        int v = get_value(in);
        snprintf(detail, sizeof detail, "write=%d value=%d", w, v);
        check(w == 0 && v == 1, "injected pull-up on line 1 reads 1", detail);
        w = write_sysfs(dir, 1, "pull", "pull-down");
        v = get_value(in);
        snprintf(detail, sizeof detail, "write=%d value=%d", w, v);
        check(w == 0 && v == 0, "injected pull-down on line 1 reads 0", detail);
        close(in);
    }
    close(chip);
    return failures;
}
