/* A standalone driver for libFuzzer targets: runs LLVMFuzzerTestOneInput
 * over every file named on the command line (directories are walked one
 * level), so the seed corpus is exercised by a normal build and meson test,
 * with any compiler. */
#include <dirent.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
        static char buf[1 << 20];
        ssize_t n = read_small_file(path, buf, sizeof buf);
        if (n < 0) {
                fprintf(stderr, "cannot read %s: %s\n", path, strerror((int) -n));
                return -1;
        }
        LLVMFuzzerTestOneInput((const uint8_t *) buf, (size_t) n);
        return 0;
}

int main(int argc, char *argv[]) {
        int files = 0;
        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "cannot stat %s\n", argv[i]);
                        return 1;
                }
                if (!S_ISDIR(st.st_mode)) {
                        if (run_file(argv[i]) < 0)
                                return 1;
                        files++;
                        continue;
                }
                DIR *d = opendir(argv[i]);
                if (!d)
                        return 1;
                struct dirent *de;
                while ((de = readdir(d))) {
                        if (de->d_name[0] == '.')
                                continue;
                        char p[PATH_MAX];
                        snprintf(p, sizeof p, "%s/%s", argv[i], de->d_name);
                        if (run_file(p) < 0) {
                                closedir(d);
                                return 1;
                        }
                        files++;
                }
                closedir(d);
        }
        printf("ran %d inputs\n", files);
        return files > 0 ? 0 : 1;
}
